"""Event-time timers against a plain dictionary of live deadlines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.timers import EventTimeTimers

# a user's timers are on its partition, which its key decides
PARTITION_OF = {"u1": 0, "u2": 0, "u3": 1, "u4": 1}
USERS = st.sampled_from(sorted(PARTITION_OF))
KINDS = st.sampled_from(["session", "churn"])
PARTITIONS = st.integers(min_value=0, max_value=1)
TIMES = st.integers(min_value=0, max_value=200)

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), USERS, KINDS, TIMES),
        st.tuples(st.just("cancel"), USERS, KINDS),
        st.tuples(st.just("advance"), PARTITIONS, TIMES),
        st.tuples(st.just("drop"), PARTITIONS),
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(OPERATIONS)
def test_timers_fire_exactly_the_live_deadlines_the_watermark_passed_in_order(operations) -> None:
    """Whatever the moves of deadlines, each fire is a live timer, once, in deadline order."""
    timers = EventTimeTimers()
    live: dict[tuple[str, str], tuple[int, int]] = {}  # (user, kind) -> (partition, deadline)
    watermarks: dict[int, int] = {}
    for operation in operations:
        if operation[0] == "schedule":
            _, user, kind, deadline = operation
            partition = PARTITION_OF[user]
            timers.schedule(partition, user, kind, deadline)
            live[(user, kind)] = (partition, deadline)
        elif operation[0] == "cancel":
            _, user, kind = operation
            timers.cancel(user, kind)
            live.pop((user, kind), None)
        elif operation[0] == "drop":
            _, partition = operation
            timers.drop_partition(partition)
            watermarks.pop(partition, None)
            live = {key: value for key, value in live.items() if value[0] != partition}
        else:
            _, partition, ts = operation
            timers.advance(partition, ts)
            watermarks[partition] = max(ts, watermarks.get(partition, -1))
            mark = watermarks[partition]
            due = sorted(
                (deadline, user, kind)
                for (user, kind), (p, deadline) in live.items()
                if p == partition and deadline <= mark
            )
            fired = [(deadline, user, kind) for user, kind, deadline in timers.expired(partition)]
            assert fired == due
            for _, user, kind in fired:
                del live[(user, kind)]
        assert timers.pending() == len(live)
