"""Trending: the leaders it ranks are exactly the most popular items, whatever was excluded."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models.reco.items import ItemIndex
from pipeline.models.reco.recommender import Trending

N_ITEMS = 30
LEADERS = 8  # fewer leaders than items, and than the k asked for: every path is taken

adds = st.tuples(
    st.integers(0, N_ITEMS - 1), st.sampled_from([0.5, 1.0, 2.0]), st.integers(0, 10**9)
)
looks = st.tuples(st.integers(1, 12), st.sets(st.integers(0, N_ITEMS - 1), max_size=6))
steps = st.lists(st.one_of(adds, looks), min_size=1, max_size=300)


def trending() -> Trending:
    items = ItemIndex()
    for i in range(N_ITEMS):
        items.index(f"m{i}")
    model = Trending(items)
    model.LEADERS = LEADERS
    return model


@settings(max_examples=150, deadline=None)
@given(steps)
def test_top_is_the_k_largest_in_order_and_the_same_after_a_snapshot(script: list) -> None:
    model, ts = trending(), 0
    for step in script:
        if len(step) == 3:
            idx, weight, dt = step
            ts += dt % 86_400_000  # event time moves forward
            model.add(idx, weight, ts)
            continue
        k, exclude = step
        got = model.top(k, exclude=exclude)
        values = model.values()
        allowed = [i for i in range(N_ITEMS) if i not in exclude]
        expected = sorted((float(values[i]) for i in allowed), reverse=True)[:k]
        assert [float(values[i]) for i in got] == expected  # the k largest, in order
        assert len(set(got)) == len(got) and not set(got) & exclude
        restored = pickle.loads(pickle.dumps(model))  # as a snapshot brings it back
        assert restored.top(k, exclude=exclude) == got
        assert model.top(k, exclude=exclude) == got  # asked again, unchanged
