# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The artwork picks of a list, compiled: the hot path of :mod:`pipeline.models.artwork`.

The arithmetic is :class:`~pipeline.models.artwork.ArtworkBandit`'s, operation for operation
in the same order (C doubles are the IEEE doubles Python's floats are, and the module is
built with ``-ffp-contract=off``, so no multiply-add is fused): the same counts give the
same picks and the same propensities, to the bit. What compiling buys is the loops: the
upper bound of each tag in a context, the best artwork of each item, the draws, the
stickiness and the records of a list, without a Python frame per item or a float object per
product. ``tests/unit/models/test_artwork_bandit.py`` checks the picks against the greedy
computation written plainly in Python.

Every function takes the bandit itself; its counts (dictionaries) are the stored form and
the truth. What the loops read are arrays, kept by the bandit's :class:`Scorer`: each list
of artworks of the catalog as indices (of its artworks and of their tag lists), each tag
list as the indices of its tags, each level's own factors by artwork index and its tag
counts by tag index, kept as the counts change; and, in ``memo``
(:meth:`ArtworkBandit.memo`, fresh when the counts change), each context's chooser
(ε, its levels) and upper bounds by tag list index, computed on first use. An item's best
is then a loop over a few doubles, cheaper than a lookup of it; a tag's factor a few reads
of doubles, not a dictionary lookup per level and tag (a list's picks in a memo just made
compute the bounds of all its tag lists).
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject_Call
from libc.math cimport NAN, isnan, sqrt
from libc.stdint cimport uint64_t

import hashlib

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)

cdef object _blake2b = hashlib.blake2b
cdef dict _DIGEST_16 = {"digest_size": 16}  # passed as it is: no keywords built per call
cdef double _SCALE = 2.0 ** -64
cdef object _new_tuple = tuple.__new__
cdef str ALL_USERS = "*"
cdef tuple _NO_TAG = ("",)
#: Lists of artworks whose indices a scorer keeps; beyond, all are dropped.
MAX_PLANS = 100_000


cdef class _Counts:
    """The bandit's parameters, read once per call."""

    cdef double prior
    cdef double optimism

    def __init__(self, bandit):
        self.prior = bandit.prior
        self.optimism = bandit.optimism


cdef class _Vec:
    """A growable array of doubles; what was never set reads as ``fill``."""

    cdef double* data
    cdef Py_ssize_t size
    cdef double fill

    def __cinit__(self, double fill):
        self.data = NULL
        self.size = 0
        self.fill = fill

    def __dealloc__(self):
        PyMem_Free(self.data)

    cdef inline double get(self, Py_ssize_t i):
        return self.data[i] if i < self.size else self.fill

    cdef int set(self, Py_ssize_t i, double value) except -1:
        cdef Py_ssize_t size, k
        cdef double* grown
        if i >= self.size:
            size = max(2 * self.size, i + 64)
            grown = <double*>PyMem_Realloc(self.data, size * sizeof(double))
            if grown == NULL:
                raise MemoryError()
            for k in range(self.size, size):
                grown[k] = self.fill
            self.data, self.size = grown, size
        self.data[i] = value
        return 0


cdef class _Plan:
    """A list of artworks as indices: each artwork's, and its tags'."""

    cdef tuple artworks  # the tuple itself: its id stays its while the plan holds it
    cdef Py_ssize_t n
    cdef Py_ssize_t* arts
    cdef Py_ssize_t* tags

    def __dealloc__(self):
        PyMem_Free(self.arts)
        PyMem_Free(self.tags)


cdef class _TagList:
    """A list of tags as the indices of its tags; no tags is the one tag ``""``."""

    cdef Py_ssize_t n
    cdef Py_ssize_t* ids

    def __dealloc__(self):
        PyMem_Free(self.ids)


cdef class _Level:
    """One level's tag counts by tag index: expected takes and takes (0 where none)."""

    cdef _Vec expected
    cdef _Vec takes

    def __cinit__(self):
        self.expected = _Vec(0.0)
        self.takes = _Vec(0.0)


cdef class Scorer:
    """Indices of the artworks, tags and tag lists a bandit has met, and its counts as arrays.

    Not stored: a bandit makes one when it first picks (its counts are the truth). The own
    factor of each artwork at each level, and the counts of each tag at each level, are
    kept as the counts change (:meth:`set_own` and :meth:`set_tags`, called by the
    bandit's ``show`` and ``take``): a tag's factor is then read from a few doubles, not
    from a dictionary per level and tag.
    """

    cdef dict ids  # artwork id → index
    cdef dict tag_index  # tag → index
    cdef dict tag_ids  # tag list → index
    cdef list tag_lists  # index → _TagList
    cdef dict levels  # level → _Level
    cdef dict own  # level → _Vec of own factors by artwork index (1 where none)
    cdef dict plans  # id of a list of artworks → _Plan

    def __init__(self, bandit):
        self.ids = {}
        self.tag_index = {}
        self.tag_ids = {}
        self.tag_lists = []
        self.levels = {}
        self.own = {}
        self.plans = {}
        for where, arms in bandit.arms.items():
            for artwork_id in arms:
                self.set_own(where, artwork_id, bandit._own(arms, artwork_id))
        for where, tag_counts in bandit.tags.items():
            self.set_tags(where, tag_counts, tuple(tag_counts))

    cpdef set_tags(self, str where, dict tag_counts, tuple tags):
        """The counts of ``tags`` at level ``where`` are now theirs in ``tag_counts``."""
        cdef _Level level = self._level(where)
        cdef Py_ssize_t index
        for tag in tags:
            entry = tag_counts[tag]
            index = self._tag(tag)
            level.expected.set(index, <double>entry[0])
            level.takes.set(index, <double>entry[1])

    cdef _Level _level(self, str where):
        found = self.levels.get(where)
        if found is None:
            found = self.levels[where] = _Level()
        return <_Level>found

    cdef list levels_of(self, tuple context):
        """The tag counts of all users, then of each level of ``context``."""
        cdef list levels = [self._level(ALL_USERS)]
        for where in context:
            levels.append(self._level(where))
        return levels

    cdef Py_ssize_t _tag(self, object tag) except -1:
        found = self.tag_index.get(tag)
        if found is None:
            found = self.tag_index[tag] = len(self.tag_index)
        return <Py_ssize_t>found

    cpdef set_own(self, str where, str artwork_id, double factor):
        """The own factor of ``artwork_id`` at level ``where`` is now ``factor``."""
        vec = self.own.get(where)
        if vec is None:
            vec = self.own[where] = _Vec(1.0)
        (<_Vec>vec).set(self._artwork(artwork_id), factor)

    cdef Py_ssize_t _artwork(self, object artwork_id) except -1:
        found = self.ids.get(artwork_id)
        if found is None:
            found = self.ids[artwork_id] = len(self.ids)
        return <Py_ssize_t>found

    cdef Py_ssize_t _tag_list(self, tuple tags) except -1:
        found = self.tag_ids.get(tags)
        if found is not None:
            return <Py_ssize_t>found
        cdef tuple each = tags if tags else _NO_TAG
        cdef _TagList listed = _TagList()
        cdef Py_ssize_t i
        listed.n = len(each)
        listed.ids = <Py_ssize_t*>PyMem_Malloc(listed.n * sizeof(Py_ssize_t))
        if listed.ids == NULL:
            raise MemoryError()
        for i in range(listed.n):
            listed.ids[i] = self._tag(each[i])
        self.tag_ids[tags] = len(self.tag_lists)  # registered once whole
        self.tag_lists.append(listed)
        return len(self.tag_lists) - 1

    cdef _Plan plan(self, tuple artworks):
        cdef object key = id(artworks)
        cdef object found = self.plans.get(key)
        if found is not None and (<_Plan>found).artworks is artworks:
            return <_Plan>found
        if len(self.plans) >= MAX_PLANS:
            self.plans.clear()
        cdef _Plan plan = _Plan()
        cdef Py_ssize_t n = len(artworks), j
        plan.artworks, plan.n = artworks, n
        plan.arts = <Py_ssize_t*>PyMem_Malloc(max(n, 1) * sizeof(Py_ssize_t))
        plan.tags = <Py_ssize_t*>PyMem_Malloc(max(n, 1) * sizeof(Py_ssize_t))
        if plan.arts == NULL or plan.tags == NULL:
            raise MemoryError()
        for j in range(n):
            artwork = <tuple>artworks[j]
            plan.arts[j] = self._artwork(artwork[0])
            plan.tags[j] = self._tag_list(artwork[1])
        self.plans[key] = plan
        return plan

    cdef _Vec bounds(self, dict memo, tuple context):
        """The memo's bounds in ``context`` by tag list index (NaN: not computed yet)."""
        found = memo.get(context)
        if found is None:
            found = memo[context] = _Vec(NAN)
        return <_Vec>found

    cdef Py_ssize_t best(self, _Counts counts, list levels, _Plan plan, _Vec bounds, _Vec own) except -1:
        """ArtworkBandit.greedy: the first artwork of the highest bound times own factor."""
        cdef Py_ssize_t j, best = 0, tag
        cdef double bound, score, top = 0.0
        for j in range(plan.n):
            tag = plan.tags[j]
            bound = bounds.get(tag)
            if isnan(bound):
                bound = _bound(counts, levels, <_TagList>self.tag_lists[tag])
                bounds.set(tag, bound)
            score = bound * (own.get(plan.arts[j]) if own is not None else 1.0)
            if j == 0 or score > top:
                top, best = score, j
        return best


cdef double _bound(_Counts counts, list levels, _TagList tags):
    """The upper bound of the factor of ``tags`` in a context (ArtworkBandit.greedy).

    ``levels``: the tag counts of all users, then of each of the context's levels. The
    tags' factor down the levels, each shrunk toward the level above; plus ``optimism``
    Poisson errors of it at the context's first level. A list of no tags is the tag ``""``
    (counted nowhere: a factor of 1).
    """
    cdef double prior = counts.prior
    cdef double total = 0.0, factor, expected
    cdef Py_ssize_t n = tags.n, depth = len(levels) - 1, i, k, tag
    cdef _Level level
    for i in range(n):
        tag = tags.ids[i]
        factor = 1.0
        for k in range(depth + 1):
            level = <_Level>levels[k]
            factor = (level.takes.get(tag) + prior * factor) / (level.expected.get(tag) + prior)
        total += factor
    factor = total / n
    if counts.optimism:
        level = <_Level>levels[1 if depth else 0]  # the context's first level
        expected = 0.0
        for i in range(n):
            expected += level.expected.get(tags.ids[i])
        expected /= n
        factor += counts.optimism * sqrt(factor / (expected + prior))
    return factor


cdef Scorer _scorer(bandit):
    scorer = bandit._scorer
    if scorer is None:
        scorer = bandit._scorer = Scorer(bandit)
    return <Scorer>scorer


cdef class _Chooser:
    """The picks of lists in one context under one policy: ε, bounds and own factors.

    Made once per memo (:func:`_chooser`): what it reads changes only with the counts.
    """

    cdef _Counts counts
    cdef Scorer scorer
    cdef tuple context
    cdef list popular_levels, bandit_levels
    cdef double popular_eps, bandit_eps, eps
    cdef bint uniform, popular
    cdef _Vec popular_bounds, bandit_bounds, popular_own, bandit_own
    # the last pick
    cdef Py_ssize_t index, n
    cdef double propensity, p_popular, p_bandit
    cdef bint explored

    def __init__(self, bandit, str policy, tuple context, dict memo):
        self.counts = _Counts(bandit)
        self.scorer = scorer = _scorer(bandit)
        self.context = context
        self.popular_eps, self.bandit_eps = bandit._epsilons(context, memo)
        self.eps = self.popular_eps if policy == "popular" else self.bandit_eps
        self.uniform = policy == "random"
        self.popular = policy == "popular"
        self.popular_bounds = scorer.bounds(memo, ())
        self.bandit_bounds = scorer.bounds(memo, context)
        self.popular_levels = scorer.levels_of(())
        self.bandit_levels = scorer.levels_of(context)
        self.popular_own = scorer.own.get(ALL_USERS)
        self.bandit_own = scorer.own.get(context[0]) if context else self.popular_own

    cdef int choose(self, tuple artworks, double explore_draw, double pick_draw, object sticky) except -1:
        cdef Py_ssize_t n = len(artworks), best, popular_best, bandit_best, i, index
        cdef double eps = self.eps
        cdef bint explored
        cdef _Plan plan = self.scorer.plan(artworks)
        popular_best = self.scorer.best(
            self.counts, self.popular_levels, plan, self.popular_bounds, self.popular_own
        )
        if self.context:
            bandit_best = self.scorer.best(
                self.counts, self.bandit_levels, plan, self.bandit_bounds, self.bandit_own
            )
        else:
            bandit_best = popular_best
        if self.uniform:
            explored = True
            index = min(<Py_ssize_t>(pick_draw * n), n - 1)
            self.propensity = 1.0 / n
        else:
            best = popular_best if self.popular else bandit_best
            if sticky is not None:
                for i in range(n):
                    if (<tuple>artworks[i])[0] == sticky:
                        best = i
                        break
            explored = explore_draw < eps
            index = min(<Py_ssize_t>(pick_draw * n), n - 1) if explored else best
            self.propensity = (1.0 - eps) * (index == best) + eps / n
        self.index, self.n, self.explored = index, n, explored
        self.p_popular = (
            (1.0 - self.popular_eps) * (index == popular_best) + self.popular_eps / n
        )
        self.p_bandit = (1.0 - self.bandit_eps) * (index == bandit_best) + self.bandit_eps / n
        return 0


cdef int _draws(object hashed, double* first, double* second) except -1:
    """Two uniform draws in [0, 1) from a BLAKE2b digest (16 bytes): ``hashed``'s."""
    cdef bytes digest = hashed.digest()
    cdef const unsigned char* d = digest
    cdef uint64_t a = 0, b = 0
    cdef int k
    for k in range(7, -1, -1):
        a = (a << 8) | d[k]
        b = (b << 8) | d[8 + k]
    first[0] = <double>a * _SCALE
    second[0] = <double>b * _SCALE
    return 0


cdef inline object _blake2b_16(bytes key):
    return PyObject_Call(_blake2b, (key,), _DIGEST_16)


cdef bint _atoms(tuple record):
    """Whether every item of ``record`` is a string, number or None, or a tuple of strings."""
    for item in record:
        if item is None or type(item) is str or type(item) is float or type(item) is int:
            continue
        if type(item) is tuple and all(type(each) is str for each in <tuple>item):
            continue
        return False
    return True


cdef inline object _untracked(object record):
    PyObject_GC_UnTrack(<void*>record)
    return record


def untracked(record):
    """``record``, out of the garbage collector's sight: a tuple of atoms (or tuples of strings).

    Such a tuple can never be part of a reference cycle, so reference counting alone frees
    it; Python stops tracking exact tuples like it by itself, never the instances of a tuple
    subclass (a named tuple), which every full collection would traverse. Anything else is
    refused (ValueError).
    """
    if not isinstance(record, tuple) or not _atoms(<tuple>record):
        raise ValueError(f"not a tuple of atoms: {record!r:.100}")
    return _untracked(record)


def draws_of_bytes(bytes key):
    """Two uniform draws in [0, 1) from the BLAKE2b digest (16 bytes) of ``key``."""
    cdef double first, second
    _draws(_blake2b_16(key), &first, &second)
    return first, second


cdef _Chooser _chooser(bandit, str policy, tuple context, dict memo):
    """The memo's chooser of ``policy`` in ``context`` (made on first use)."""
    key = (_Chooser, policy, context)
    found = memo.get(key)
    if found is None:
        found = memo[key] = _Chooser(bandit, policy, context, memo)
    return <_Chooser>found


def best(bandit, tuple context, tuple artworks, dict memo):
    """ArtworkBandit.greedy: the index of the best artwork in ``context``."""
    cdef Scorer scorer = _scorer(bandit)
    return scorer.best(
        _Counts(bandit), scorer.levels_of(context), scorer.plan(artworks),
        scorer.bounds(memo, context),
        scorer.own.get(context[0] if context else ALL_USERS),
    )


def choose_list(bandit, str policy, tuple context, list picks, dict memo, choice_type):
    """ArtworkBandit.choose_list: ``choice_type`` tuples, one per ``(artworks, draw, sticky)``."""
    cdef _Chooser chooser = _chooser(bandit, policy, context, memo)
    cdef list choices = []
    cdef tuple pick, draw, artworks
    for pick in picks:
        artworks = pick[0]
        draw = pick[1]
        chooser.choose(artworks, draw[0], draw[1], pick[2])
        choices.append(_new_tuple(choice_type, (
            (<tuple>artworks[chooser.index])[0], chooser.propensity, chooser.n,
            chooser.p_popular, chooser.p_bandit, chooser.explored,
        )))
    return choices


def pick_list(
    bandit,
    str policy,
    tuple context,
    list item_ids,
    list listed,
    dict stickies,
    long long ts_ms,
    long long sticky_ms,
    Py_ssize_t max_sticky,
    bytes prefix,
    bytes suffix,
    dict memo,
    shown_type,
):
    """Artworks.pick's list: ``(picked, latest)``; what sticks is updated in ``stickies``.

    ``listed``: each item's artworks (empty: none); ``picked``: ``(artwork_id, propensity)``
    or None per item; ``latest``: a ``shown_type`` record per item with artworks. The draws
    of an item are those of ``prefix + item_id + suffix``.
    """
    cdef _Chooser chooser = _chooser(bandit, policy, context, memo)
    cdef Py_ssize_t count = len(item_ids), k
    cdef list kept = [None] * count
    cdef list picked = [None] * count
    cdef list latest = []
    cdef tuple artworks
    cdef str item_id
    cdef object sticky, artwork_id, propensity
    cdef object at = ts_ms  # one object for the list's records
    cdef double explore_draw, pick_draw
    cdef object hashed, prefixed = _blake2b_16(prefix)  # each item's digest continues it
    for k in range(count):  # what sticks, as it was before this list
        artworks = listed[k]
        if artworks:
            sticky = stickies.get(item_ids[k])
            if sticky and ts_ms - <long long>(sticky[1]) < sticky_ms:
                kept[k] = sticky[0]
    for k in range(count):
        artworks = listed[k]
        if not artworks:
            continue
        item_id = item_ids[k]
        hashed = prefixed.copy()
        hashed.update(item_id.encode() + suffix)
        _draws(hashed, &explore_draw, &pick_draw)
        chooser.choose(artworks, explore_draw, pick_draw, kept[k])
        artwork_id = (<tuple>artworks[chooser.index])[0]
        if kept[k] is None and not chooser.explored:  # what sticks is the policy's best
            stickies.pop(item_id, None)
            stickies[item_id] = (artwork_id, at)
            if len(stickies) > max_sticky:
                del stickies[next(iter(stickies))]
        propensity = chooser.propensity
        latest.append(_untracked(_new_tuple(shown_type, (
            item_id, artwork_id, context, policy, propensity, chooser.n,
            chooser.p_popular, chooser.p_bandit, at,
        ))))
        picked[k] = (artwork_id, propensity)
    return picked, latest
