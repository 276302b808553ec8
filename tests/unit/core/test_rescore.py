"""Re-scoring during a user's silence: at set days after their last session, once each.

One user watches for a while and falls silent; a second user, active every few hours,
moves the partition's watermark on (timers fire in event time). The silent user's churn
risk is published at the session end and again at 3, 7 and 10 days of silence, marked
with what triggered it; a user who comes back before a stage is not re-scored for the
old session at it. A restart in the middle of a silence resumes at the next stage.
"""

from __future__ import annotations

import orjson

from pipeline.config import Settings
from pipeline.core.events import Event, encode_event, format_ts
from pipeline.core.processor import Processor
from pipeline.serde.schemas import validator

DAY_MS = 86_400_000
START_MS = 1_767_225_600_000  # 2026-01-01
SETTINGS = Settings(churn_rescore_days=(3, 7, 10))


def play(user: str, ts_ms: int, n: int) -> bytes:
    return encode_event(Event(event_id=f"{user}-{n}", type="play", user_id=user, ts_ms=ts_ms,
                              item_id=f"m{n % 5}", position_s=0.0, duration_s=600.0))  # fmt: skip


def stream(*, returns_on_day: float | None = None) -> list[tuple[bytes, bytes]]:
    records = [(b"silent", play("silent", START_MS + n * 60_000, n)) for n in range(5)]
    if returns_on_day is not None:
        at = START_MS + int(returns_on_day * DAY_MS)
        records += [(b"silent", play("silent", at + n * 60_000, 100 + n)) for n in range(3)]
    for n in range(4 * 20):  # every six hours for twenty days
        records.append((b"busy", play("busy", START_MS + n * DAY_MS // 4 + 1, n)))
    records.sort(key=lambda record: orjson.loads(record[1])["ts"])
    return records


def churn_scores(processor: Processor, records: list[tuple[bytes, bytes]], start: int = 0):
    scores = []
    for offset, (key, value) in enumerate(records, start):
        processor.process(value, key=key, partition=0, offset=offset)
        for output in processor.take_outbox():
            if output.kind == "churn" and output.key == b"silent":
                scores.append(orjson.loads(output.value))
    return scores


def test_a_silent_user_is_scored_again_at_each_set_day_of_silence() -> None:
    scores = churn_scores(Processor(SETTINGS, clock=lambda: 4.1e9), stream())
    last_seen_ms = START_MS + 4 * 60_000
    assert [s["trigger"] for s in scores] == [
        "session_end", "inactive_3d", "inactive_7d", "inactive_10d"]  # fmt: skip
    for score, days in zip(scores[1:], (3, 7, 10), strict=True):
        assert score["ts"] == format_ts(last_seen_ms + days * DAY_MS)
        assert score["model_version"] == "churn-inactive-1" and "session" not in score
    assert scores[0]["model_version"] == "churn-logreg-7" and "session" in scores[0]
    schema = validator("churn")
    for score in scores:
        schema.validate(score)


def test_a_user_back_before_a_stage_is_not_scored_at_it_for_the_old_session() -> None:
    scores = churn_scores(Processor(SETTINGS, clock=lambda: 4.1e9), stream(returns_on_day=5))
    assert [s["trigger"] for s in scores] == [
        "session_end", "inactive_3d", "session_end", "inactive_3d", "inactive_7d",
        "inactive_10d"]  # fmt: skip


def test_a_user_back_keeps_only_the_timers_a_restart_would_arm() -> None:
    """No re-score timer of the silence ended: an evicted user's timers can be parked."""
    records = stream(returns_on_day=5)
    back = next(
        n for n, (_, value) in enumerate(records) if orjson.loads(value)["event_id"] == "silent-100"
    )
    live = Processor(SETTINGS, clock=lambda: 4.1e9)
    churn_scores(live, records[: back + 1])
    restarted = Processor(SETTINGS, clock=lambda: 4.1e9)
    restarted.adopt(live.users["silent"])
    assert [kind for kind, _ in live.timers.of("silent")] == ["session"]
    assert live.timers.of("silent") == restarted.timers.of("silent")


def test_no_rescore_when_none_is_set() -> None:
    scores = churn_scores(Processor(Settings(churn_rescore_days=()), clock=lambda: 4.1e9), stream())
    assert [s["trigger"] for s in scores] == ["session_end"]


def test_a_restart_mid_silence_resumes_at_the_next_stage() -> None:
    records = stream()
    whole = churn_scores(Processor(SETTINGS, clock=lambda: 4.1e9), records)
    cut = 1 + next(  # just after the record whose event time fired the 3-day re-score
        n for n, (_, value) in enumerate(records)
        if orjson.loads(value)["ts"] >= whole[1]["ts"]
    )  # fmt: skip
    before = Processor(SETTINGS, clock=lambda: 4.1e9)
    first = churn_scores(before, records[:cut])
    after = Processor(SETTINGS, clock=lambda: 4.1e9)
    after.install_models(0, before.models(0))
    for user, _, data in before.take_dirty():
        after.adopt(after.decode_state(user, data))
    pending = after.users["silent"].pending
    assert pending is not None and list(pending.rescores) == ["3"]  # stored with the user
    assert first + churn_scores(after, records[cut:], start=cut) == whole
