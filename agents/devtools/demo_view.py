"""The live view of ``ottscore demo``: what the worker does, redrawn in place every second.

It reads the worker's Prometheus endpoint (rates, dead letters by reason), follows the
churn, personalisation and KPI topics (the latest list of a sample user with its reasons,
the latest churn score with its top features, the users of each experiment variant from the
records' tags, the last closed hour of business KPIs overall and per variant), hands the
lists to the closed loop (:class:`~agents.devtools.demo_loop.ListInbox`), and judges the
demo's experiment on the events sent so far
(:func:`~pipeline.experiments.report.build_report`, the report ``ottscore experiment
report`` prints).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.columns import Columns
from rich.console import Group
from rich.table import Table
from rich.text import Text

from agents.devtools.demo_loop import ListInbox, LoopProgress
from agents.worker.kafka import kafka_python_config
from pipeline.config import Settings
from pipeline.core.events import Event, format_ts
from pipeline.experiments.definition import Experiment
from pipeline.experiments.report import Report, build_report

__all__ = ["Followed", "HourKpis", "Rates", "follow", "judge", "render", "scrape_labelled"]

#: The KPIs of the view, in its order (fields of schemas/kpi.schema.json).
KPIS = (
    "active_users",
    "sessions",
    "play_starts",
    "click_play_conversion",
    "search_play_success",
    "completion_rate",
    "watch_s_per_active_user",
)


def scrape_labelled(url: str, timeout_s: float = 2.0) -> dict[str, dict[str, float]]:
    """Every sample of a Prometheus endpoint: name → {first label value (or "") → value}."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    samples: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = next(iter(sample.labels.values()), "")
            by_label = samples.setdefault(sample.name, {})
            by_label[label] = by_label.get(label, 0.0) + sample.value
    return samples


Kind = Literal["list", "churn", "kpi"]


@dataclass
class HourKpis:
    """The latest closed hour window of the KPI topic: its records by scope.

    >>> kpis = HourKpis()
    >>> kpis.note({"window": "hour", "start": "2026-12-01T10:00:00.000Z", "scope": ["all"]})
    >>> kpis.note({"window": "day", "start": "2026-12-01T00:00:00.000Z", "scope": ["all"]})
    >>> kpis.note({"window": "hour", "start": "2026-12-01T11:00:00.000Z",
    ...            "scope": ["experiment", "rail", "trending"]})
    >>> kpis.note({"window": "hour", "start": "2026-12-01T10:00:00.000Z", "scope": ["all"]})
    >>> kpis.start, list(kpis.by_scope), kpis.closed
    ('2026-12-01T11:00:00.000Z', [('experiment', 'rail', 'trending')], 2)
    """

    start: str | None = None
    by_scope: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    closed: int = 0

    def note(self, record: dict[str, Any]) -> None:
        """Keep an hour window's record if it is of the latest window (later ones replace it)."""
        if record.get("window") != "hour":
            return
        start = record["start"]  # RFC 3339 in UTC with milliseconds: ordered as text
        if self.start is None or start > self.start:
            self.start, self.by_scope = start, {}
            self.closed += 1
        if start == self.start:
            self.by_scope[tuple(record["scope"])] = record


@dataclass
class Followed:
    """What the score and KPI topics said so far (updated by :func:`follow`'s thread)."""

    sample_user: str | None = None
    sample_list: dict[str, Any] | None = None
    churn: dict[str, Any] | None = None
    assignments: dict[str, dict[str, str]] = field(default_factory=dict)
    lists_by_variant: Counter[tuple[str, str]] = field(default_factory=Counter)
    kpis: HourKpis = field(default_factory=HourKpis)
    inbox: ListInbox = field(default_factory=ListInbox)
    lock: threading.Lock = field(default_factory=threading.Lock)


def follow(settings: Settings, followed: Followed, stop: threading.Event) -> threading.Thread:
    """Follow the list, churn and KPI topics from now on, in a daemon thread.

    The topics' ends are looked up before the thread starts: every record published after
    the call is seen.
    """
    consumer = KafkaConsumer(**kafka_python_config(settings), enable_auto_commit=False)
    lists, churn, kpis = (
        settings.topic_scores_personalization,
        settings.topic_scores_churn,
        settings.topic_kpis,
    )
    partitions = [
        TopicPartition(topic, p)
        for topic in (lists, churn, kpis)
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    consumer.seek_to_end()
    for partition in partitions:
        consumer.position(partition)

    kinds: dict[str, Kind] = {lists: "list", churn: "churn", kpis: "kpi"}

    def run() -> None:
        try:
            while not stop.is_set():
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for record in records:
                        if tp.topic == lists:
                            followed.inbox.put(record.value)
                        _note(followed, kinds[tp.topic], orjson.loads(record.value))
        finally:
            consumer.close()

    thread = threading.Thread(target=run, name="demo-follow", daemon=True)
    thread.start()
    return thread


def _note(followed: Followed, kind: Kind, value: dict[str, Any]) -> None:
    with followed.lock:
        if kind == "kpi":
            followed.kpis.note(value)
            return
        tags = value.get("experiments") or {}
        if tags:
            followed.assignments.setdefault(value["user_id"], {}).update(tags)
        if kind == "churn":
            followed.churn = value
            return
        for experiment_id, variant in tags.items():
            followed.lists_by_variant[experiment_id, variant] += 1
        if followed.sample_user is None and len(value["items"]) >= 3:
            followed.sample_user = value["user_id"]
        if value["user_id"] == followed.sample_user:
            followed.sample_list = value


@dataclass
class Rates:
    """Counters of the last two scrapes, for per-second rates."""

    previous: dict[str, dict[str, float]] = field(default_factory=dict)
    previous_at: float = 0.0

    def per_s(self, now: dict[str, dict[str, float]], name: str, at: float) -> float:
        """The rate of counter ``name`` (all labels) since the previous scrape."""
        before = sum(self.previous.get(name, {}).values())
        span = max(at - self.previous_at, 1e-6) if self.previous_at else 0.0
        return (sum(now.get(name, {}).values()) - before) / span if span else 0.0


def judge(experiment: Experiment, followed: Followed, events: list[Event]) -> Report:
    """The demo experiment's report over the events sent so far, assigned as the tags say."""
    with followed.lock:
        assignments = {
            user: tags[experiment.id]
            for user, tags in followed.assignments.items()
            if experiment.id in tags
        }
    return build_report(experiment, assignments, list(events), window_s=86_400.0)


def render(
    elapsed_s: float,
    metrics: dict[str, dict[str, float]],
    rates: tuple[float, float],
    followed: Followed,
    progress: LoopProgress,
    report: Report | None,
    *,
    experiment_id: str,
) -> Group:
    """The whole view, one table per part."""
    events_per_s, scores_per_s = rates

    def total(name: str) -> float:
        return sum(metrics.get(name, {}).values())

    head = Table(title=f"ottscore demo — {elapsed_s:,.0f} s (Ctrl-C to stop)", show_header=False)
    for row in (
        ("events/s", events_per_s, "consumed", "ottscore_events_consumed_total"),
        ("scores/s", scores_per_s, "published", "ottscore_scores_published_total"),
        ("users", total("ottscore_users_cached"), "duplicates",
         "ottscore_events_deduplicated_total"),
    ):  # fmt: skip
        head.add_row(row[0], f"{row[1]:,.0f}", row[2], f"{total(row[3]):,.0f}")
    dead = Table(title="dead letters by reason", box=box.SIMPLE)
    dead.add_column("reason")
    dead.add_column("records", justify="right")
    for reason, count in sorted(metrics.get("ottscore_events_rejected_total", {}).items()):
        if count:
            dead.add_row(reason, f"{count:,.0f}")
    parts: list[Any] = [Columns([head, _loop_table(progress, followed.inbox), dead])]
    pair: list[Any] = []
    with followed.lock:
        sample, churn = followed.sample_list, followed.churn
        by_variant = dict(followed.lists_by_variant)
        kpis = HourKpis(followed.kpis.start, dict(followed.kpis.by_scope), followed.kpis.closed)
    if sample is not None:
        tag = ", ".join(f"{k}: {v}" for k, v in (sample.get("experiments") or {}).items())
        title = f"latest list of {sample['user_id']}" + (f" ({tag})" if tag else "")
        listed = Table(title=title, box=box.SIMPLE)
        listed.add_column("#")
        listed.add_column("item")
        listed.add_column("reason")
        for rank, item in enumerate(sample["items"], start=1):
            listed.add_row(str(rank), item["item_id"], item["reason"])
        pair.append(listed)
    if churn is not None:
        scored = Table(
            title=f"latest churn score: {churn['user_id']} {churn['churn_probability']:.3f} "
            f"({churn['risk_band']})",
            box=box.SIMPLE,
        )
        scored.add_column("top feature")
        scored.add_column("value", justify="right")
        scored.add_column("contribution", justify="right")
        for feature in churn.get("top_features", []):
            scored.add_row(
                feature["name"], f"{feature['value']:.3g}", f"{feature['contribution']:+.3f}"
            )
        pair.append(scored)
    if pair:
        parts.append(Columns(pair))
    parts.append(_kpi_table(kpis, experiment_id))
    if report is not None:
        title = f"experiment {report.experiment_id}: sample ratio p = {report.srm_p_value:.3g}"
        judged = Table(title=title, box=box.SIMPLE)
        for column in ("metric", "variant", "lists", "users", "control", "variant mean",
                       "difference (95 % CS)", "p"):  # fmt: skip
            judged.add_column(column)
        for row in report.rows:
            lower, upper = row.interval
            lists = by_variant.get((report.experiment_id, row.variant), 0)
            judged.add_row(
                row.metric, row.variant, f"{lists:,}", f"{row.control_users} / {row.users}",
                "-" if row.control_mean is None else f"{row.control_mean:.4g}",
                "-" if row.mean is None else f"{row.mean:.4g}",
                f"[{lower:.3g}, {upper:.3g}]", f"{row.p_value:.3g}",
            )  # fmt: skip
        parts.append(judged)
    return Group(*parts)


def _loop_table(progress: LoopProgress, inbox: ListInbox) -> Table:
    """The closed loop: its event time, and the home screens its users saw."""
    with progress.lock:
        at, screens = progress.event_time_ms, dict(progress.screens)
        handed, left, finished = progress.lists_handed, progress.departures, progress.finished
    state = "finished" if finished else "waiting for the worker" if at is None else "running"
    loop = Table(title=f"simulated users ({state})", show_header=False)
    loop.add_row("event time", "-" if at is None else _minute(format_ts(at)))
    loop.add_row("lists from the worker", f"{inbox.received:,}")
    loop.add_row("lists handed to users", f"{handed:,}")
    loop.add_row("home screens: own list", f"{screens.get('for_you', 0):,}")
    loop.add_row("home screens: popular", f"{screens.get('popular', 0):,}")
    loop.add_row("users left", f"{left:,}")
    return loop


def _kpi_table(kpis: HourKpis, experiment_id: str) -> Table | Text:
    """The latest closed hour window, overall and per variant (of the demo's experiment first)."""
    if kpis.start is None:
        return Text(
            "business KPIs: no hour window closed yet (waiting for every partition's event "
            "time to pass a window's end + 30 min + the lateness)"
        )
    scopes = sorted(
        kpis.by_scope, key=lambda scope: (scope != ("all",), scope[1:2] != (experiment_id,), scope)
    )
    title = (
        f"business KPIs of the hour from {_minute(kpis.start)} (event time; "
        f"{kpis.closed:,} hour windows closed so far)"
    )
    table = Table(title=title, box=box.SIMPLE)
    table.add_column("kpi")
    for scope in scopes:
        table.add_column(_scope_name(scope, experiment_id), justify="right")
    for kpi in KPIS:
        table.add_row(kpi, *(_value(kpis.by_scope[scope].get(kpi)) for scope in scopes))
    return table


def _scope_name(scope: tuple[str, ...], experiment_id: str) -> str:
    """``all``; a variant of ``experiment_id`` by its name; another's as ``id/variant``."""
    if scope == ("all",):
        return "all"
    return scope[2] if scope[1] == experiment_id else "/".join(scope[1:])


def _value(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}"


def _minute(ts: str) -> str:
    """An RFC 3339 time to the minute, for a narrow column: ``2026-12-01 10:00``."""
    return ts[:16].replace("T", " ")


def now_s() -> float:
    """Monotonic seconds, for rates."""
    return time.monotonic()
