"""Viewers who answer messages: a win-back brings back who has not long left; nothing else does."""

from __future__ import annotations

import dataclasses

from pipeline.sim.audience import DAY_MS
from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig, Message, PublishedList, Slice

CONFIG = ClosedLoopConfig(users=80, days=35, seed=4, weekly_churn=(2.0, 0.02))


def messaging(kind: str, *, sent: bool = True, day: float = 25.0):
    """A policy that publishes no list and messages every user once, at ``day``."""
    at_ms = CONFIG.start_ms + int(day * DAY_MS)
    done: list[bool] = []

    def policy(piece: Slice) -> list[PublishedList | Message]:
        if done or piece.end_ms < at_ms:
            return []
        done.append(True)
        return [Message(f"user-{n:06d}", kind, at_ms, sent) for n in range(CONFIG.users)]

    return policy, at_ms


def test_a_win_back_brings_back_every_viewer_not_long_gone_at_a_sure_response() -> None:
    sure = ClosedLoop(dataclasses.replace(CONFIG, win_back_response=1.0))
    policy, at_ms = messaging("win_back")
    run = sure.run(policy)
    back = dict(run.comebacks)
    # read at the end of the first slice after at_ms, answered within a day of reading
    assert back and all(at_ms < start <= at_ms + 2 * DAY_MS for start in back.values())
    baseline = ClosedLoop(CONFIG).run(messaging("win_back", sent=False)[0])
    gone = {user for user, left in baseline.left_ms.items() if left <= at_ms - 14 * DAY_MS}
    assert set(back) == {f"user-{n:06d}" for n in range(CONFIG.users)} - gone
    # a visit may make no event (nothing tempted them): most of the won back make some
    assert len(active(run, at_ms)) >= len(active(baseline, at_ms)) + len(back) // 3


def active(run, at_ms: int) -> set[str]:
    """The users with an event within two days after ``at_ms``."""
    return {e.user_id for e in run.events if at_ms < e.ts_ms <= at_ms + 2 * DAY_MS}


def test_withheld_or_other_messages_or_no_response_change_nothing() -> None:
    quiet = ClosedLoop(CONFIG).run(lambda piece: []).digest()
    assert ClosedLoop(CONFIG).run(messaging("win_back", sent=False)[0]).digest() == quiet
    sure = dataclasses.replace(CONFIG, win_back_response=1.0)
    assert ClosedLoop(sure).run(messaging("new_for_fans")[0]).digest() == quiet
    deaf = dataclasses.replace(CONFIG, win_back_response=0.0)
    assert ClosedLoop(deaf).run(messaging("win_back")[0]).digest() == quiet
