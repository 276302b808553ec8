"""The combiner: a window once every partition has closed it, each once, its state stored."""

from __future__ import annotations

import functools
from typing import Any

import orjson
import pytest
from damage import damaged, holding, written
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kpis.combine import KpiCombiner, PartialsCombiner
from pipeline.kpis.windows import COUNTS, HOUR_MS

FOLLOW = 1_800_000


def window(start_ms: int, **counts: Any) -> dict[str, Any]:
    return {"window": "hour", "start_ms": start_ms, "scope": ["all"],
            **dict.fromkeys(COUNTS, 0), "watch_s": 0.0, **counts}  # fmt: skip


def partial(partition: int, released_ms: int, *windows: dict[str, Any]) -> dict[str, Any]:
    return {"partition": partition, "released_ms": released_ms, "follow_ms": FOLLOW,
            "windows": list(windows), "returns": []}  # fmt: skip


CLOSED = HOUR_MS + FOLLOW  # the first hour's close point


def test_a_window_waits_for_every_partition_then_is_given_once() -> None:
    combiner = KpiCombiner(partitions=3)
    assert combiner.feed(partial(0, CLOSED, window(0, active_users=2, clicks=4))) == []
    assert combiner.feed(partial(1, CLOSED, window(0, active_users=1, clicks=1))) == []
    assert combiner.feed(partial(2, CLOSED - 1)) == []  # not past the close yet
    [record] = combiner.feed(partial(2, CLOSED))  # a partition without users in it
    assert (record["active_users"], record["clicks"]) == (3, 5)
    assert combiner.feed(partial(2, CLOSED + 10)) == []


def test_a_partial_sent_again_replaces_and_one_for_a_window_given_is_ignored() -> None:
    combiner = KpiCombiner(partitions=2)
    combiner.feed(partial(0, CLOSED, window(0, active_users=2)))
    combiner.feed(partial(0, CLOSED, window(0, active_users=2)))  # its worker restarted
    [record] = combiner.feed(partial(1, CLOSED, window(0, active_users=5)))
    assert record["active_users"] == 7
    assert combiner.feed(partial(1, CLOSED + HOUR_MS, window(0, active_users=1))) == []


def test_the_stored_state_goes_on_as_the_running_one() -> None:
    running = KpiCombiner(partitions=2)
    running.feed(partial(0, CLOSED + HOUR_MS, window(0, clicks=1), window(HOUR_MS, clicks=2)))
    stored = KpiCombiner.from_bytes(running.to_bytes(), partitions=2)
    last = partial(1, CLOSED + HOUR_MS, window(0, clicks=3))
    given = stored.feed(last)
    assert given == running.feed(last)
    assert [r["clicks"] for r in given] == [4, 2]


def test_a_partition_beyond_the_count_is_waited_for_from_then_on() -> None:
    combiner = KpiCombiner(partitions=1)
    assert combiner.feed(partial(1, CLOSED, window(0, active_users=2))) == []
    [record] = combiner.feed(partial(0, CLOSED, window(0, active_users=1)))
    assert combiner.partitions == 2 and record["active_users"] == 3
    with pytest.raises(ValueError, match="partition -1"):
        combiner.feed(partial(-1, CLOSED))


def test_a_partial_refused_by_the_results_leaves_its_windows_uncounted() -> None:
    combiners = PartialsCombiner.from_stored(None, None, partitions=2)
    combiners.feed(orjson.dumps(partial(0, CLOSED, window(0, active_users=2))))
    broken = partial(1, CLOSED, window(0, active_users=50)) | {"outcomes": [[HOUR_MS]]}
    with pytest.raises(ValueError, match="partial record refused"):
        combiners.feed(orjson.dumps(broken))  # its windows were taken before it broke
    with pytest.raises(ValueError, match="JSONDecodeError"):
        combiners.feed(b"{not json")
    [record], [] = combiners.feed(orjson.dumps(partial(1, CLOSED, window(0, active_users=5))))
    assert record["active_users"] == 7  # not 57: the refused record counts nowhere
    stored = PartialsCombiner.from_stored(*combiners.to_bytes(), partitions=2)
    assert stored.to_bytes() == combiners.to_bytes()


@functools.cache
def partials_by_path() -> dict[tuple[Any, ...], list[Any]]:
    """The written partial records holding each path (:func:`damage.holding`)."""
    return holding(written().partials)


@settings(max_examples=1500, deadline=None)
@given(data=st.data())
def test_a_partial_record_damaged_anywhere_is_taken_or_refused_never_another_exception(
    data: st.DataObject,
) -> None:
    """A partial record that raised anything but ``ValueError`` crashed the combining agent."""
    combiner = PartialsCombiner.from_stored(None, None, partitions=4)
    record = orjson.dumps(damaged(data, partials_by_path()))
    try:
        combiner.feed(record)
    except ValueError:
        assert (
            combiner.to_bytes() == PartialsCombiner.from_stored(None, None, partitions=4).to_bytes()
        )


def test_a_partition_number_that_cannot_be_stored_is_refused_and_changes_nothing() -> None:
    combiner = PartialsCombiner.from_stored(None, None, partitions=2)
    combiner.feed(orjson.dumps(partial(0, CLOSED, window(0, active_users=5))))
    before = combiner.to_bytes()
    with pytest.raises(ValueError, match="partial record refused"):
        combiner.feed(orjson.dumps(partial(0, CLOSED) | {"partition": 1e300}))
    assert combiner.to_bytes() == before


def test_a_partition_beyond_the_events_topic_is_refused_and_windows_go_on() -> None:
    """Taken, a partial of partition 10⁹ would make every window wait for it, stored so."""
    combiner = PartialsCombiner.from_stored(None, None, partitions=2)
    combiner.feed(orjson.dumps(partial(0, CLOSED, window(0, active_users=5))), topic_partitions=2)
    before = combiner.to_bytes()
    with pytest.raises(ValueError, match="partition 1000000000 of an events topic of 2"):
        combiner.feed(orjson.dumps(partial(10**9, CLOSED)), topic_partitions=2)
    assert combiner.to_bytes() == before
    last = orjson.dumps(partial(1, CLOSED, window(0, active_users=1)))
    [record], [] = combiner.feed(last, topic_partitions=2)
    assert record["active_users"] == 6
    grown = PartialsCombiner.from_stored(None, None, partitions=2)  # partitions were added
    assert grown.feed(orjson.dumps(partial(2, CLOSED)), topic_partitions=3) == ([], [])
    assert grown.kpis.partitions == 3
