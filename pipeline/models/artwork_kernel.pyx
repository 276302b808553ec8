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

Every function takes the bandit itself and reads its counts (dictionaries, the stored form).
What the loops read are arrays, kept by the bandit's :class:`Scorer`: each list of artworks
of the catalog as indices (of its artworks and of their tag lists), each level's own factors
by artwork index, kept as the counts change; and, in ``memo`` (:meth:`ArtworkBandit.memo`,
fresh when the counts change), each context's upper bounds by tag list index, computed on
first use. An item's best is then a loop over a few doubles, cheaper than a lookup of it.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport NAN, isnan, sqrt
from libc.stdint cimport uint64_t

import hashlib

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)

cdef object _blake2b = hashlib.blake2b
cdef double _SCALE = 2.0 ** -64
cdef object _new_tuple = tuple.__new__
cdef str ALL_USERS = "*"
cdef tuple _NO_TAG = ("",)
cdef dict _NONE = {}  # the counts of a level that has none
#: Lists of artworks whose indices a scorer keeps; beyond, all are dropped.
MAX_PLANS = 100_000


cdef class _Counts:
    """The bandit's counts and parameters, read once per call."""

    cdef dict tags
    cdef double prior
    cdef double optimism

    def __init__(self, bandit):
        self.tags = bandit.tags
        self.prior = bandit.prior
        self.optimism = bandit.optimism


cdef inline double _first(object entry):
    return 0.0 if entry is None else <double>(entry[0])


cdef inline double _second(object entry):
    return 0.0 if entry is None else <double>(entry[1])


cdef double _bound(_Counts counts, tuple context, object tags):
    """The upper bound of the factor of ``tags`` in ``context`` (ArtworkBandit.greedy).

    The tags' factor down the levels (all users, then the context's), each shrunk toward
    the level above; plus ``optimism`` Poisson errors of it at the context's first level.
    """
    cdef double prior = counts.prior
    cdef double total = 0.0, factor, expected
    cdef Py_ssize_t n = len(tags), k, depth = len(context)
    cdef dict level_counts
    cdef tuple each = tags if n else _NO_TAG
    cdef list levels = [counts.tags.get(ALL_USERS) or _NONE]  # each level's counts
    for where in context:
        levels.append(counts.tags.get(where) or _NONE)
    for tag in each:
        factor = 1.0
        for k in range(depth + 1):
            entry = (<dict>levels[k]).get(tag)
            factor = (_second(entry) + prior * factor) / (_first(entry) + prior)
        total += factor
    factor = total / (n if n > 1 else 1)
    if counts.optimism:
        level_counts = <dict>levels[1 if depth else 0]  # the context's first level
        expected = 0.0
        for tag in each:
            expected += _first(level_counts.get(tag))
        expected /= (n if n > 1 else 1)
        factor += counts.optimism * sqrt(factor / (expected + prior))
    return factor


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


cdef class Scorer:
    """Indices of the artworks and tag lists a bandit has met, and each level's own factors.

    Not stored: a bandit makes one when it first picks (its counts are the truth). The own
    factor of each artwork at each level is kept as the counts change
    (:meth:`set_own`, called by the bandit's ``show`` and ``take``).
    """

    cdef dict ids  # artwork id → index
    cdef dict tag_ids  # tag list → index
    cdef list tag_lists  # index → tag list
    cdef dict own  # level → _Vec of own factors by artwork index (1 where none)
    cdef dict plans  # id of a list of artworks → _Plan

    def __init__(self, bandit):
        self.ids = {}
        self.tag_ids = {}
        self.tag_lists = []
        self.own = {}
        self.plans = {}
        for where, arms in bandit.arms.items():
            for artwork_id in arms:
                self.set_own(where, artwork_id, bandit._own(arms, artwork_id))

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

    cdef Py_ssize_t _tag_list(self, object tags) except -1:
        found = self.tag_ids.get(tags)
        if found is None:
            found = self.tag_ids[tags] = len(self.tag_lists)
            self.tag_lists.append(tags)
        return <Py_ssize_t>found

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

    cdef Py_ssize_t best(self, _Counts counts, tuple context, _Plan plan, _Vec bounds, _Vec own) except -1:
        """ArtworkBandit.greedy: the first artwork of the highest bound times own factor."""
        cdef Py_ssize_t j, best = 0, tag
        cdef double bound, score, top = 0.0
        for j in range(plan.n):
            tag = plan.tags[j]
            bound = bounds.get(tag)
            if isnan(bound):
                bound = _bound(counts, context, self.tag_lists[tag])
                bounds.set(tag, bound)
            score = bound * (own.get(plan.arts[j]) if own is not None else 1.0)
            if j == 0 or score > top:
                top, best = score, j
        return best


cdef Scorer _scorer(bandit):
    scorer = bandit._scorer
    if scorer is None:
        scorer = bandit._scorer = Scorer(bandit)
    return <Scorer>scorer


cdef class _Chooser:
    """The picks of one list: its context, ε, bounds and own factors, read once."""

    cdef _Counts counts
    cdef Scorer scorer
    cdef tuple context
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
        self.popular_own = scorer.own.get(ALL_USERS)
        self.bandit_own = scorer.own.get(context[0]) if context else self.popular_own

    cdef int choose(self, tuple artworks, double explore_draw, double pick_draw, object sticky) except -1:
        cdef Py_ssize_t n = len(artworks), best, popular_best, bandit_best, i, index
        cdef double eps = self.eps
        cdef bint explored
        cdef _Plan plan = self.scorer.plan(artworks)
        popular_best = self.scorer.best(self.counts, (), plan, self.popular_bounds, self.popular_own)
        if self.context:
            bandit_best = self.scorer.best(
                self.counts, self.context, plan, self.bandit_bounds, self.bandit_own
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


cdef inline tuple _draws(bytes key):
    cdef bytes digest = _blake2b(key, digest_size=16).digest()
    cdef const unsigned char* d = digest
    cdef uint64_t first = 0, second = 0
    cdef int k
    for k in range(7, -1, -1):
        first = (first << 8) | d[k]
        second = (second << 8) | d[8 + k]
    return (<double>first * _SCALE, <double>second * _SCALE)


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
    return _draws(key)


def best(bandit, tuple context, tuple artworks, dict memo):
    """ArtworkBandit.greedy: the index of the best artwork in ``context``."""
    cdef Scorer scorer = _scorer(bandit)
    return scorer.best(
        _Counts(bandit), context, scorer.plan(artworks), scorer.bounds(memo, context),
        scorer.own.get(context[0] if context else ALL_USERS),
    )


def choose_list(bandit, str policy, tuple context, list picks, dict memo, choice_type):
    """ArtworkBandit.choose_list: ``choice_type`` tuples, one per ``(artworks, draw, sticky)``."""
    cdef _Chooser chooser = _Chooser(bandit, policy, context, memo)
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
    cdef _Chooser chooser = _Chooser(bandit, policy, context, memo)
    cdef Py_ssize_t count = len(item_ids), k
    cdef list kept = [None] * count
    cdef list picked = [None] * count
    cdef list latest = []
    cdef tuple artworks, draw
    cdef str item_id
    cdef object sticky, artwork_id
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
        draw = _draws(prefix + item_id.encode() + suffix)
        chooser.choose(artworks, draw[0], draw[1], kept[k])
        artwork_id = (<tuple>artworks[chooser.index])[0]
        if kept[k] is None and not chooser.explored:  # what sticks is the policy's best
            stickies.pop(item_id, None)
            stickies[item_id] = (artwork_id, ts_ms)
            if len(stickies) > max_sticky:
                del stickies[next(iter(stickies))]
        latest.append(_untracked(_new_tuple(shown_type, (
            item_id, artwork_id, context, policy, chooser.propensity, chooser.n,
            chooser.p_popular, chooser.p_bandit, ts_ms,
        ))))
        picked[k] = (artwork_id, chooser.propensity)
    return picked, latest
