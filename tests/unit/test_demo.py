"""The demo's closed loop and live view, without Kafka: lists in, home screens and KPIs out."""

from __future__ import annotations

import threading

import pytest
from rich.console import Console

from agents.devtools import demo
from agents.devtools.demo_loop import KafkaLists, ListInbox, LoopProgress, run_loop
from agents.devtools.demo_view import Followed, _note, render
from pipeline.config import Settings
from pipeline.core.events import format_ts
from pipeline.core.records import personalization_record
from pipeline.kpis.combine import kpi_records
from pipeline.kpis.windows import WindowCounts
from pipeline.sim.audience import DAY_MS, HOUR_MS
from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig, Slice
from pipeline.sim.home_screen import PublishedList


def listed(user: str, *items: str, experiments: dict[str, str] | None = None) -> bytes:
    return personalization_record(
        user,
        0,
        items=[(item, 1.0, "taste") for item in items],
        model_version="m",
        segment=None,
        cold_start=False,
        experiments=experiments,
    )


class PacedStop(threading.Event):
    """A stop event whose waits move a hand-held clock instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.now += timeout or 0.0
        return self.is_set()


def test_the_policy_returns_the_latest_list_of_each_user_published_since_the_last_step() -> None:
    inbox = ListInbox()
    sent: list[tuple[bytes, bytes]] = []
    policy = KafkaLists(lambda key, value: sent.append((key, value)), inbox, rate=0.0)
    piece = Slice(0, 300_000, [], [(b"u1", b"a"), (b"u2", b"b")])
    inbox.put(listed("u1", "film-1", "film-2"))
    inbox.put(listed("u2", "film-3", experiments={"rail": "trending"}))
    inbox.put(listed("u1", "film-4"))

    assert policy(piece) == [
        PublishedList("u1", ("film-4",)),
        PublishedList("u2", ("film-3",), {"rail": "trending"}),
    ]
    assert sent == [(b"u1", b"a"), (b"u2", b"b")]
    assert policy(Slice(300_000, 600_000, [], [])) == []
    inbox.put(listed("u3", "film-5"))
    assert policy(Slice(600_000, 900_000, [], [])) == [PublishedList("u3", ("film-5",))]
    assert inbox.received == 4 and policy.sent == 2


def test_the_policy_paces_the_records_at_the_rate() -> None:
    halt = PacedStop()
    policy = KafkaLists(lambda key, value: None, ListInbox(), rate=100.0, stop=halt)
    policy.clock = lambda: halt.now
    for records in (50, 0, 150):
        policy(Slice(0, 1, [], [(b"u", b"{}")] * records))
    assert halt.waits == pytest.approx([0.5, 0.0, 1.5])


def test_users_see_the_lists_that_came_back_on_their_next_home_screen() -> None:
    """A stand-in worker answers every slice's users after it; the loop shows them the lists."""
    loop = ClosedLoop(ClosedLoopConfig(users=20, days=3, seed=4))
    picks = [item.item_id for item in loop.catalog.items[:3]]
    inbox = ListInbox()
    users_sent: list[str] = []
    answers: list[int] = []

    def send(key: bytes, value: bytes) -> None:
        users_sent.append(key.decode())

    class Answered(KafkaLists):
        def __call__(self, piece: Slice) -> list[PublishedList]:
            published = super().__call__(piece)
            for user in dict.fromkeys(users_sent):
                inbox.put(listed(user, *picks, experiments={"rail": "personalised"}))
            answers.append(len(set(users_sent)))
            users_sent.clear()
            return published

    progress = LoopProgress()
    run_loop(loop, Answered(send, inbox, rate=0.0), progress, threading.Event())

    assert progress.finished
    assert progress.screens["for_you"] > 0 and progress.screens["popular"] > 0
    assert progress.lists_handed == sum(answers[:-1]) == inbox.received - answers[-1]
    assert progress.events == sorted(progress.events, key=lambda event: event.ts_ms)


def test_run_loop_stops_when_told() -> None:
    loop = ClosedLoop(ClosedLoopConfig(users=20, days=3, seed=4))
    halt, progress = threading.Event(), LoopProgress()
    halt.set()
    run_loop(loop, KafkaLists(lambda key, value: None, ListInbox(), rate=0.0), progress, halt)
    assert not progress.finished and progress.event_time_ms is not None
    assert progress.event_time_ms < loop.config.end_ms


def view_text(followed: Followed) -> str:
    console = Console(record=True, width=200)
    console.print(render(3.0, {}, (0.0, 0.0), followed, LoopProgress(), None, experiment_id="rail"))
    return console.export_text()


def test_the_view_waits_for_every_partition_before_showing_kpis() -> None:
    assert "no hour window closed yet (waiting for every partition" in view_text(Followed())


def test_the_view_shows_the_latest_hour_window_overall_and_per_variant() -> None:
    followed = Followed()
    old, new = 0, HOUR_MS
    parts = [
        WindowCounts("hour", old, ("all",), active_users=9),
        WindowCounts("hour", new, ("all",), active_users=5, clicks=4, click_plays=3),
        WindowCounts("hour", new, ("experiment", "rail", "trending"), active_users=2),
        WindowCounts("hour", new, ("experiment", "other", "b"), active_users=1),
        WindowCounts("day", 0, ("all",), active_users=11),
    ]
    for record in kpi_records(parts):
        _note(followed, "kpi", record)
    text = view_text(followed)
    assert f"hour from {format_ts(new)[:16].replace('T', ' ')}" in text
    assert "2 hour windows closed so far" in text
    header = next(line for line in text.splitlines() if line.strip().startswith("kpi"))
    assert header.split() == ["kpi", "all", "trending", "other/b"]
    row = next(line for line in text.splitlines() if line.strip().startswith("active_users"))
    assert row.split() == ["active_users", "5", "2", "1"]
    row = next(line for line in text.splitlines() if "click_play_conversion" in line)
    assert row.split()[:2] == ["click_play_conversion", "0.750"]


def test_a_second_demo_starts_a_day_after_the_events_the_topic_holds(monkeypatch) -> None:
    now = 1_796_400_000_000
    broker = demo.LocalKafka.from_settings(Settings())
    monkeypatch.setattr(demo, "_latest_event_ms", lambda settings: None)
    assert demo._start_ms(Settings(), broker, now_ms=now) == now - 5 * 365 * DAY_MS
    latest = now - 100 * DAY_MS + 123_456
    monkeypatch.setattr(demo, "_latest_event_ms", lambda settings: latest)
    start = demo._start_ms(Settings(), broker, now_ms=now)
    assert start % HOUR_MS == 0 and latest + DAY_MS - HOUR_MS < start <= latest + DAY_MS
    monkeypatch.setattr(demo, "_latest_event_ms", lambda settings: now - HOUR_MS)
    with pytest.raises(SystemExit, match="would be stamped in the future"):
        demo._start_ms(Settings(), broker, now_ms=now)
