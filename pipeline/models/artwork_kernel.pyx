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

Every function takes the bandit itself and reads its counts (dictionaries, the stored form);
``memo`` is :meth:`ArtworkBandit.memo`: per context, the upper bound of each tag list and
the best artwork of each list of artworks seen since the counts last changed.
"""

from libc.math cimport sqrt
from libc.stdint cimport uint64_t

import hashlib

cdef object _blake2b = hashlib.blake2b
cdef double _SCALE = 2.0 ** -64
cdef object _new_tuple = tuple.__new__
cdef str ALL_USERS = "*"
cdef tuple _NO_TAG = ("",)
#: How many times the prior an artwork's own factor is shrunk by (artwork.OWN_PRIOR).
OWN_PRIOR = 5.0
cdef double _OWN_PRIOR = OWN_PRIOR


cdef class _Counts:
    """The bandit's counts and parameters, read once per call."""

    cdef dict tags
    cdef dict arms
    cdef double prior
    cdef double optimism

    def __init__(self, bandit):
        self.tags = bandit.tags
        self.arms = bandit.arms
        self.prior = bandit.prior
        self.optimism = bandit.optimism


cdef inline double _first(object entry):
    return 0.0 if entry is None else <double>(entry[0])


cdef inline double _second(object entry):
    return 0.0 if entry is None else <double>(entry[1])


cdef double _bound(_Counts counts, tuple context, object tags):
    """ArtworkBandit._bound: the tags' factor down the levels, plus its optimism."""
    cdef double prior = counts.prior
    cdef double total = 0.0, factor, expected
    cdef Py_ssize_t n = len(tags)
    cdef object level_counts, entry
    cdef tuple each = tags if n else _NO_TAG
    cdef object tag, where
    for tag in each:
        factor = 1.0
        level_counts = counts.tags.get(ALL_USERS)
        entry = None if level_counts is None else level_counts.get(tag)
        factor = (_second(entry) + prior * factor) / (_first(entry) + prior)
        for where in context:
            level_counts = counts.tags.get(where)
            entry = None if level_counts is None else level_counts.get(tag)
            factor = (_second(entry) + prior * factor) / (_first(entry) + prior)
        total += factor
    factor = total / (n if n > 1 else 1)
    if counts.optimism:
        level_counts = counts.tags.get(context[0] if context else ALL_USERS)
        expected = 0.0
        for tag in each:
            entry = None if level_counts is None else level_counts.get(tag)
            expected += _first(entry)
        expected /= (n if n > 1 else 1)
        factor += counts.optimism * sqrt(factor / (expected + prior))
    return factor


cdef Py_ssize_t _best(
    _Counts counts, tuple context, list artworks, dict bounds, dict known, object arms
) except -1:
    """ArtworkBandit._best: the first artwork of the highest bound times own factor."""
    cdef object key = id(artworks)
    cdef object found = known.get(key)
    if found is not None and (<tuple>found)[0] is artworks:
        return <Py_ssize_t>(<tuple>found)[1]
    cdef double shrink = _OWN_PRIOR * counts.prior
    cdef double score, top = 0.0, bound
    cdef Py_ssize_t i = 0, best = 0
    cdef object bound_obj, own
    cdef tuple artwork
    for artwork in artworks:
        tags = artwork[1]
        bound_obj = bounds.get(tags)
        if bound_obj is None:
            bound = _bound(counts, context, tags)
            bounds[tags] = bound
        else:
            bound = <double>bound_obj
        score = bound
        if arms is not None:
            own = (<dict>arms).get(artwork[0])
            if own is not None:
                score = bound * ((_second(own) + shrink) / (_first(own) + shrink))
        if i == 0 or score > top:
            top, best = score, i
        i += 1
    known[key] = (artworks, best)  # the list: its id stays its while it lives
    return best


cdef dict _in(dict memo, object key):
    found = memo.get(key)
    if found is None:
        found = memo[key] = {}
    return <dict>found


cdef class _Chooser:
    """The picks of one list: its context, ε and memos, read once."""

    cdef _Counts counts
    cdef tuple context
    cdef double popular_eps, bandit_eps, eps
    cdef bint uniform, popular
    cdef dict popular_bounds, bandit_bounds, popular_known, bandit_known
    cdef object popular_arms, bandit_arms
    # the last pick
    cdef Py_ssize_t index, n
    cdef double propensity, p_popular, p_bandit
    cdef bint explored

    def __init__(self, bandit, str policy, tuple context, dict memo):
        self.counts = _Counts(bandit)
        self.context = context
        epsilons = bandit._epsilons(context, memo)
        self.popular_eps, self.bandit_eps = epsilons
        self.eps = self.popular_eps if policy == "popular" else self.bandit_eps
        self.uniform = policy == "random"
        self.popular = policy == "popular"
        self.popular_bounds = _in(memo, ())
        self.bandit_bounds = _in(memo, context)
        self.popular_known = _in(memo, ("best", ()))
        self.bandit_known = _in(memo, ("best", context))
        arms = self.counts.arms
        self.popular_arms = arms.get(ALL_USERS) or None
        self.bandit_arms = (arms.get(context[0]) or None) if context else self.popular_arms

    cdef int choose(self, list artworks, double explore_draw, double pick_draw, object sticky) except -1:
        cdef Py_ssize_t n = len(artworks), best, popular_best, bandit_best, i, index
        cdef double eps = self.eps
        cdef bint explored
        popular_best = _best(
            self.counts, (), artworks, self.popular_bounds, self.popular_known, self.popular_arms
        )
        if self.context:
            bandit_best = _best(
                self.counts, self.context, artworks, self.bandit_bounds, self.bandit_known,
                self.bandit_arms,
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


def draws_of_bytes(bytes key):
    """Two uniform draws in [0, 1) from the BLAKE2b digest (16 bytes) of ``key``."""
    return _draws(key)


def best(bandit, tuple context, list artworks, dict memo):
    """ArtworkBandit.greedy: the index of the best artwork in ``context``."""
    counts = _Counts(bandit)
    arms = counts.arms.get(context[0] if context else ALL_USERS) or None
    return _best(counts, context, artworks, _in(memo, context), _in(memo, ("best", context)), arms)


def choose_list(bandit, str policy, tuple context, list picks, dict memo, choice_type):
    """ArtworkBandit.choose_list: ``choice_type`` tuples, one per ``(artworks, draw, sticky)``."""
    cdef _Chooser chooser = _Chooser(bandit, policy, context, memo)
    cdef list choices = []
    cdef tuple pick, draw
    cdef list artworks
    for pick in picks:
        artworks = list(pick[0]) if type(pick[0]) is not list else pick[0]
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
    cdef list artworks
    cdef tuple draw
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
        latest.append(_new_tuple(shown_type, (
            item_id, artwork_id, context, policy, chooser.propensity, chooser.n,
            chooser.p_popular, chooser.p_bandit, ts_ms,
        )))
        picked[k] = (artwork_id, chooser.propensity)
    return picked, latest
