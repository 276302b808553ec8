"""The live view of ``ottscore demo``: what the worker does, redrawn in place every second.

It reads the worker's Prometheus endpoint (rates, dead letters by reason), follows the
churn and personalisation topics (the latest list of a sample user with its reasons, the
latest churn score with its top features, the users of each experiment variant from the
records' tags), and judges the demo's experiment on the events sent so far
(:func:`~pipeline.experiments.report.build_report`, the report ``ottscore experiment
report`` prints).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.columns import Columns
from rich.console import Group
from rich.table import Table

from agents.worker.kafka import kafka_python_config
from pipeline.config import Settings
from pipeline.core.events import Event
from pipeline.experiments.definition import Experiment
from pipeline.experiments.report import Report, build_report

__all__ = ["Followed", "Rates", "follow", "render", "scrape_labelled"]


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


@dataclass
class Followed:
    """What the score topics said so far (updated by :func:`follow`'s thread)."""

    sample_user: str | None = None
    sample_list: dict[str, Any] | None = None
    churn: dict[str, Any] | None = None
    assignments: dict[str, dict[str, str]] = field(default_factory=dict)
    lists_by_variant: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def follow(settings: Settings, followed: Followed, stop: threading.Event) -> threading.Thread:
    """Follow the churn and personalisation topics from now on, in a daemon thread."""

    def run() -> None:
        consumer = KafkaConsumer(**kafka_python_config(settings), enable_auto_commit=False)
        topics = (settings.topic_scores_personalization, settings.topic_scores_churn)
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        try:
            while not stop.is_set():
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for record in records:
                        _note(followed, tp.topic == topics[0], orjson.loads(record.value))
        finally:
            consumer.close()

    thread = threading.Thread(target=run, name="demo-follow", daemon=True)
    thread.start()
    return thread


def _note(followed: Followed, is_list: bool, value: dict[str, Any]) -> None:
    with followed.lock:
        tags = value.get("experiments") or {}
        if tags:
            followed.assignments.setdefault(value["user_id"], {}).update(tags)
        if not is_list:
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
    report: Report | None,
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
    parts: list[Any] = [Columns([head, dead])]
    pair: list[Any] = []
    with followed.lock:
        sample, churn = followed.sample_list, followed.churn
        by_variant = dict(followed.lists_by_variant)
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
        parts.append(scored)
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


def now_s() -> float:
    """Monotonic seconds, for rates."""
    return time.monotonic()
