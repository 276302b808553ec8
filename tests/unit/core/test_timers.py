"""Event-time timers against a plain dictionary of live deadlines."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.core.timers import PARK_MS, EventTimeTimers

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


def fire_and_check(
    timers: EventTimeTimers,
    live: dict[tuple[str, str], tuple[int, int]],
    partition: int,
    mark: int,
) -> None:
    """Fire ``partition``'s timers at watermark ``mark``: exactly the live ones due, in order."""
    due = sorted(
        (deadline, user, kind)
        for (user, kind), (p, deadline) in live.items()
        if p == partition and deadline <= mark
    )
    fired = [(deadline, user, kind) for user, kind, deadline in timers.expired(partition)]
    assert fired == due
    for _, user, kind in fired:
        del live[(user, kind)]


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
            fire_and_check(timers, live, partition, watermarks[partition])
        assert timers.pending() == len(live)


# times at the edges of the parking buckets and inside them
PARK_TIMES = st.builds(
    lambda bucket, within: bucket * PARK_MS + within,
    st.integers(0, 3),
    st.sampled_from([0, 1, PARK_MS // 2, PARK_MS - 1]),
)
PARKING = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), USERS, KINDS, PARK_TIMES),
        st.tuples(st.just("cancel"), USERS, KINDS),
        st.tuples(st.just("advance"), PARTITIONS, PARK_TIMES),
        st.tuples(st.just("drop"), PARTITIONS),
        st.tuples(st.just("park"), USERS),
        st.tuples(st.just("read"), USERS),
    ),
    max_size=80,
)


@settings(max_examples=600, deadline=None)
@given(PARKING)
@example([  # the watermark reaches a parked deadline inside the deadline's own bucket
    ("schedule", "u1", "churn", PARK_MS + 1), ("park", "u1"), ("advance", 0, PARK_MS + 1),
])  # fmt: skip
def test_parked_timers_come_back_before_they_are_due(operations) -> None:
    """A parked user is handed back before the watermark passes any of its deadlines.

    As the processor does: a parked user's timers are armed again when its state is read
    back, at its user's event (``read``) or when :meth:`EventTimeTimers.woken` hands it
    back; whatever the order, what fires is what a dictionary of live deadlines says.
    """
    timers = EventTimeTimers()
    live: dict[tuple[str, str], tuple[int, int]] = {}
    parked: dict[str, list[tuple[str, int]]] = {}
    watermarks: dict[int, int] = {}

    def arm(user: str) -> None:
        for kind, deadline in parked.pop(user):
            timers.schedule(PARTITION_OF[user], user, kind, deadline)
            live[(user, kind)] = (PARTITION_OF[user], deadline)

    def read_back(user: str) -> None:
        if user in parked:
            assert timers.unpark(PARTITION_OF[user], user, parked[user])
            arm(user)

    for operation in operations:
        if operation[0] in ("schedule", "cancel", "read"):
            read_back(operation[1])  # the processor holds a user's state to change its timers
        if operation[0] == "schedule":
            _, user, kind, deadline = operation
            timers.schedule(PARTITION_OF[user], user, kind, deadline)
            live[(user, kind)] = (PARTITION_OF[user], deadline)
        elif operation[0] == "cancel":
            _, user, kind = operation
            timers.cancel(user, kind)
            live.pop((user, kind), None)
        elif operation[0] == "park":
            user = operation[1]
            mine = timers.of(user)
            assert mine == sorted((k, d) for (u, k), (_, d) in live.items() if u == user)
            if mine and user not in parked:
                partition = PARTITION_OF[user]
                first_bucket = min(d for _, d in mine) // PARK_MS
                soon = first_bucket <= watermarks.get(partition, -1) // PARK_MS
                assert timers.park(partition, user, mine) is not soon
                if not soon:
                    parked[user] = mine
                    for kind, _ in mine:
                        del live[(user, kind)]
                    assert timers.of(user) == []
        elif operation[0] == "drop":
            _, partition = operation
            timers.drop_partition(partition)
            watermarks.pop(partition, None)
            live = {key: value for key, value in live.items() if value[0] != partition}
            parked = {u: t for u, t in parked.items() if PARTITION_OF[u] != partition}
        elif operation[0] == "advance":
            _, partition, ts = operation
            timers.advance(partition, ts)
            watermarks[partition] = mark = max(ts, watermarks.get(partition, -1))
            reached = {
                user
                for user, mine in parked.items()
                if PARTITION_OF[user] == partition and min(d for _, d in mine) <= mark
            }
            due_now = timers.due(partition)
            woken = timers.woken(partition)
            assert reached <= set(woken) <= set(parked)
            assert woken == sorted(woken)
            if woken or any(p == partition and d <= mark for p, d in live.values()):
                assert due_now  # (a stale entry may make it true too)
            for user in woken:
                arm(user)
            fire_and_check(timers, live, partition, mark)
        assert timers.pending() == len(live)
        assert timers.parked == len(parked)
