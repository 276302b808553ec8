"""Prometheus metrics of ottscore, in base units, with no user or item ids in labels.

The processing core counts in plain integers (:class:`~pipeline.core.tally.Tally`);
:meth:`Metrics.add` moves a tally into the Prometheus counters once per batch, so the hot
path pays a dictionary increment per event, not a labelled-counter lookup.

Accounting identity, per worker process::

    records_received = events_consumed (all types) + events_deduplicated
                       + events_rejected (all reasons) + events_already_applied
                       + learning_records (all outcomes)

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> m = Metrics(CollectorRegistry())
>>> t = Tally()
>>> t.received += 3; t.consumed["play"] += 2; t.rejected["not_json"] += 1
>>> m.add(t)
>>> m.registry.get_sample_value("ottscore_events_consumed_total", {"type": "play"})
2.0
>>> m.registry.get_sample_value("ottscore_records_received_total")
3.0
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from pipeline.core.catalog_items import CATALOG_REJECT_REASONS
from pipeline.core.events import EVENT_TYPES, REJECT_REASONS
from pipeline.core.outputs import SCORED_KINDS
from pipeline.core.tally import LEARNING_OUTCOMES, Tally
from pipeline.crm.consent import CONSENT_REFUSE_REASONS
from pipeline.crm.triggers import STATUSES, SUPPRESS_REASONS, TRIGGER_TYPES
from pipeline.experiments.definition import REFUSAL_REASONS as DEFINITION_REFUSALS
from pipeline.models.artwork import ARTWORK_POLICIES
from pipeline.serde.snapshots import REFUSAL_REASONS

#: Fields of a KPI record that are not values (schemas/kpi.schema.json).
_KPI_LABELS = frozenset({"key", "window", "start", "end", "scope", "schema_version"})

#: The kinds of record whose refusal for size the worker survives (``records_refused``).
REFUSED_KINDS = ("dlq", "snapshot")

__all__ = ["LATENCY_BUCKETS_S", "Metrics"]

#: Event-time → publish spans from sub-second (live) to days (replays, session ends).
LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
    6 * 3600,
    86_400,
    7 * 86_400,
)


def _counter_of_each(
    name: str, documentation: str, label: str, values: Iterable[str], registry: CollectorRegistry
) -> PromCounter:
    """A counter labelled ``label``, with every one of ``values`` exported from the start, at 0."""
    counter = PromCounter(name, documentation, [label], registry=registry)
    for value in values:
        counter.labels(value)
    return counter


class Metrics:
    """ottscore's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._kpi_end: dict[str, float] = {}
        self.records_received = PromCounter(
            "ottscore_records_received_total",
            "Input records read from the events topic, valid or not.",
            registry=registry,
        )
        self.events_consumed = _counter_of_each(
            "ottscore_events_consumed_total",
            "Valid, new input events applied to state, by event type.",
            "type",
            EVENT_TYPES,
            registry,
        )
        self.events_rejected = _counter_of_each(
            "ottscore_events_rejected_total",
            "Input records sent to the dead-letter topic, by reason.",
            "reason",
            REJECT_REASONS,
            registry,
        )
        self.events_deduplicated = PromCounter(
            "ottscore_events_deduplicated_total",
            "Client retries dropped because their event_id was seen recently.",
            registry=registry,
        )
        self.events_already_applied = PromCounter(
            "ottscore_events_already_applied_total",
            "Records re-read after a restart whose effect the state already holds.",
            registry=registry,
        )
        self.scores_published = PromCounter(
            "ottscore_scores_published_total",
            "Output records published, by kind (churn, personalization, signal).",
            ["kind"],
            registry=registry,
        )
        self.sessions_closed = PromCounter(
            "ottscore_sessions_closed_total",
            "Sessions ended by the event-time watermark.",
            registry=registry,
        )
        self.experiments_refused = _counter_of_each(
            "ottscore_experiment_definitions_refused_total",
            "Experiment definitions read from the experiments topic and refused, by reason "
            "(not_json, schema, a rule beyond the schema, or a change to a registered one).",
            "reason",
            sorted(DEFINITION_REFUSALS),
            registry,
        )
        self.catalog_rejected = _counter_of_each(
            "ottscore_catalog_items_rejected_total",
            "Catalog items skipped because they do not validate against catalog.schema.json, "
            "by reason.",
            "reason",
            CATALOG_REJECT_REASONS,
            registry,
        )
        self.timer_errors = PromCounter(
            "ottscore_timer_errors_total",
            "Event-time timers (session ends, churn labels) skipped because they raised.",
            registry=registry,
        )
        self.churn_promotions = PromCounter(
            "ottscore_churn_promotions_total",
            "Churn challengers that became the champion of their partition (AUC higher by "
            "an always-valid test).",
            registry=registry,
        )
        self.learning_published = PromCounter(
            "ottscore_learning_published_total",
            "Deltas of shared learning published: a partition's models' learning over an "
            "epoch (OTTSCORE_SHARE_EVERY_S).",
            registry=registry,
        )
        self.learning_records = _counter_of_each(
            "ottscore_learning_records_total",
            "Merge records of shared learning read from the events topic, by outcome: folded "
            "into the partition's models, already_folded (read again after a restart), "
            "ignored (shared learning is off).",
            "outcome",
            LEARNING_OUTCOMES,
            registry=registry,
        )
        self.learning_merges = PromCounter(
            "ottscore_learning_merges_total",
            "Merges of shared learning this worker's merger wrote to the partitions of the "
            "events topic (the deltas read within OTTSCORE_SHARE_MERGE_WITHIN_S make one).",
            registry=registry,
        )
        self.churn_rescores = PromCounter(
            "ottscore_churn_rescores_total",
            "Churn scores of users silent for one of OTTSCORE_CHURN_RESCORE_DAYS since their "
            "last session (published with trigger inactive_<days>d).",
            registry=registry,
        )
        self.artwork_shows = _counter_of_each(
            "ottscore_artwork_shows_total",
            "Listed items shown with an artwork whose outcome is known (taken, or not within "
            "the windows), by the policy that picked the artwork.",
            "policy",
            ARTWORK_POLICIES,
            registry,
        )
        self.artwork_takes = _counter_of_each(
            "ottscore_artwork_takes_total",
            "Artwork shows taken: the item clicked with that artwork, then played for "
            "OTTSCORE_ARTWORK_TAKE_PLAY_S; the take rate is takes over shows, per policy.",
            "policy",
            ARTWORK_POLICIES,
            registry,
        )
        self.actions = PromCounter(
            "ottscore_actions_total",
            "CRM triggers published to the actions topic, by type and status (sent, or "
            "withheld by an experiment's holdout).",
            ["type", "status"],
            registry=registry,
        )
        self.actions_suppressed = PromCounter(
            "ottscore_actions_suppressed_total",
            "CRM triggers whose criteria were met but not published, by type and reason "
            "(daily_cap, type_gap, opted_out).",
            ["type", "reason"],
            registry=registry,
        )
        for kind in TRIGGER_TYPES:
            for status in STATUSES:
                self.actions.labels(kind, status)
            for reason in SUPPRESS_REASONS:
                self.actions_suppressed.labels(kind, reason)
        self.consent_refused = _counter_of_each(
            "ottscore_consent_records_refused_total",
            "Consent records skipped because they do not validate against "
            "consent.schema.json, by reason.",
            "reason",
            CONSENT_REFUSE_REASONS,
            registry,
        )
        self.audience_users = Gauge(
            "ottscore_audience_users",
            "Users of this worker in each audience of each catalog genre (fans: active, "
            "high affinity; clients: active, lower affinity; lapsed: silent, high affinity); "
            "sum over the workers. Counts only, no user id.",
            ["genre", "audience"],
            registry=registry,
        )
        self.event_to_publish_latency = Histogram(
            "ottscore_event_to_publish_latency_seconds",
            "Wall-clock publish time minus the event time of the record's triggering event.",
            ["kind"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.ingest_to_publish_latency = Histogram(
            "ottscore_ingest_to_publish_latency_seconds",
            "Wall-clock publish time minus the Kafka timestamp of the triggering input record.",
            ["kind"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.batch_duration = Histogram(
            "ottscore_batch_duration_seconds",
            "Time to process one batch of input records, state write-back included.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.state_writes = PromCounter(
            "ottscore_state_writes_total",
            "User states written back to the changelog-backed table.",
            registry=registry,
        )
        self.states_unreadable = PromCounter(
            "ottscore_states_unreadable_total",
            "Stored user states that could not be read on restore; those users start afresh.",
            registry=registry,
        )
        self.commit_timeouts = PromCounter(
            "ottscore_commit_timeouts_total",
            "Commits abandoned after OTTSCORE_KAFKA_COMMIT_TIMEOUT_S (outputs or offsets not "
            "acknowledged in time); each is tried again at the next interval.",
            registry=registry,
        )
        self.last_commit = Gauge(
            "ottscore_last_commit_timestamp_seconds",
            "Wall-clock time of this worker's latest successful commit of input offsets.",
            registry=registry,
        )
        self.users_cached = Gauge(
            "ottscore_users_cached",
            "User states held in memory by this worker.",
            registry=registry,
        )
        self.states_evicted = PromCounter(
            "ottscore_user_states_evicted_total",
            "User states evicted from the cache (OTTSCORE_USER_CACHE_MAX), stored already.",
            registry=registry,
        )
        self.states_read_back = PromCounter(
            "ottscore_user_states_read_back_total",
            "Evicted user states read back from the store at their user's event or timer.",
            registry=registry,
        )
        self.timers_woken = PromCounter(
            "ottscore_timers_woken_total",
            "Evicted users read back because the watermark neared their parked timers.",
            registry=registry,
        )
        self.timers_pending = Gauge(
            "ottscore_timers_pending",
            "Live event-time timers (open sessions, pending labels).",
            registry=registry,
        )
        self.timers_parked = Gauge(
            "ottscore_timers_parked",
            "Evicted users whose timers wait in the store until the watermark nears them.",
            registry=registry,
        )
        self.rocksdb_block_cache = Gauge(
            "ottscore_rocksdb_block_cache_bytes",
            "RocksDB's block cache shared by the worker's databases, bytes in use "
            "(OTTSCORE_ROCKSDB_BLOCK_CACHE_MB).",
            registry=registry,
        )
        self.rocksdb_memtables = Gauge(
            "ottscore_rocksdb_memtables_bytes",
            "RocksDB's memtables of all the worker's databases, bytes "
            "(OTTSCORE_ROCKSDB_MEMTABLES_MB).",
            registry=registry,
        )
        self.snapshots_published = PromCounter(
            "ottscore_snapshots_published_total",
            "Model snapshots acknowledged by the models topic.",
            registry=registry,
        )
        self.snapshots_refused = _counter_of_each(
            "ottscore_snapshots_refused_total",
            "Model snapshots not loaded on restore, by reason "
            "(unsigned, bad_signature, malformed, wrong_partition).",
            "reason",
            REFUSAL_REASONS,
            registry,
        )
        self.records_refused = _counter_of_each(
            "ottscore_records_refused_total",
            "Records the broker refused for their size, by kind: dlq (sent again without "
            "the original bytes) or snapshot (dropped; the previous snapshot stays).",
            "kind",
            REFUSED_KINDS,
            registry,
        )
        self.snapshots_restored = PromCounter(
            "ottscore_snapshots_restored_total",
            "Partitions whose models were restored from a verified snapshot.",
            registry=registry,
        )
        self.snapshot_seconds = Histogram(
            "ottscore_snapshot_seconds",
            "Time to pickle and sign one partition's models (blocks the worker meanwhile).",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.snapshot_bytes = Gauge(
            "ottscore_snapshot_bytes",
            "Size of the latest model snapshot sealed, in bytes.",
            registry=registry,
        )
        self.snapshot_last_published = Gauge(
            "ottscore_snapshot_last_published_timestamp_seconds",
            "Wall-clock time the latest model snapshot was acknowledged (Unix seconds).",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "ottscore_consumer_lag_records",
            "Input records behind the end of each input partition this worker owns "
            "(end offset minus the next offset to process).",
            ["partition"],
            registry=registry,
        )
        self.consumer_committed_lag = Gauge(
            "ottscore_consumer_committed_lag_records",
            "Input records after the group's committed offset of each input partition this "
            "worker owns (end offset minus committed offset): what a crash would replay.",
            ["partition"],
            registry=registry,
        )
        self.ready = Gauge(
            "ottscore_worker_ready",
            "1 while the worker owns recovered partitions and processes them, else 0 "
            "(starting, rebalancing or recovering its table).",
            registry=registry,
        )

        self.kpi_late_events = PromCounter(
            "ottscore_kpi_late_events_total",
            "Events older than their partition's KPI watermark by more than the allowed "
            "lateness (OTTSCORE_KPI_LATENESS_S): counted here, not in any KPI window.",
            registry=registry,
        )
        self.kpi_records_published = _counter_of_each(
            "ottscore_kpi_records_published_total",
            "KPI records published to the KPI topic by this worker's combining agent, by window "
            "(hour, day, return_7d), once every partition closed the window.",
            "window",
            ("hour", "day", "return_7d"),
            registry,
        )
        self.kpi = Gauge(
            "ottscore_kpi",
            "The latest KPI window published by this worker, per window (hour, day, "
            "return_7d), scope (all, or experiment/ID/VARIANT) and kpi (each count and ratio "
            "of schemas/kpi.schema.json).",
            ["window", "scope", "kpi"],
            registry=registry,
        )
        self.kpi_window_end = Gauge(
            "ottscore_kpi_window_end_timestamp_seconds",
            "End (event time) of the latest KPI window published by this worker, per window.",
            ["window"],
            registry=registry,
        )

        self.experiment_results_published = PromCounter(
            "ottscore_experiment_results_published_total",
            "Experiment result records published by this worker's combining agent: one per "
            "experiment at each hour boundary of event time that changed its users or values.",
            registry=registry,
        )
        self.experiment_users = Gauge(
            "ottscore_experiment_users",
            "Users seen in each experiment variant, at its latest published result.",
            ["experiment", "variant"],
            registry=registry,
        )
        self.experiment_srm_p_value = Gauge(
            "ottscore_experiment_srm_p_value",
            "Always-valid p-value of the sample-ratio test of each experiment (a value below "
            "0.05 says the assignment or the logging is broken).",
            ["experiment"],
            registry=registry,
        )
        self.experiment_p_value = Gauge(
            "ottscore_experiment_p_value",
            "Always-valid p-value of each metric of each variant against control (running "
            "minimum of 1/Lambda of the mSPRT), at the latest published result.",
            ["experiment", "variant", "metric"],
            registry=registry,
        )
        self.experiment_difference = Gauge(
            "ottscore_experiment_difference",
            "Confidence sequence of the difference (variant minus control) of each metric: "
            "bound lower or upper (absent while unbounded), and the point estimate.",
            ["experiment", "variant", "metric", "bound"],
            registry=registry,
        )

        self.model_quality = Gauge(
            "ottscore_model_quality",
            "Prequential quality over each model's last 10,000 outcomes: metric is churn_auc "
            "(exact), churn_logloss, hit_rate_at_10, mae or rmse; model the variant "
            "(churn: logreg, tree, poisson, or published: the scores of the champion of the "
            "moment; lists: personalized, or the trending baseline).",
            ["metric", "model"],
            registry=registry,
        )

        for kind in SCORED_KINDS:
            self.scores_published.labels(kind)
            self.event_to_publish_latency.labels(kind)
            self.ingest_to_publish_latency.labels(kind)

    def set_audiences(self, sizes: dict[tuple[str, str], int]) -> None:
        """Export :func:`pipeline.core.audiences.sizes_by_genre` of this worker's users."""
        for (genre, audience), size in sizes.items():
            self.audience_users.labels(genre, audience).set(size)

    def set_quality(self, rolling: dict[tuple[str, str], float]) -> None:
        """Export :meth:`pipeline.models.quality.Prequential.rolling` (NaN values are skipped)."""
        for (metric, model), value in rolling.items():
            if value == value:
                self.model_quality.labels(metric, model).set(value)

    def set_kpis(self, records: list[dict[str, Any]]) -> None:
        """Export the KPI records just published: each window's latest values."""
        for record in records:
            window = record["window"]
            scope = "/".join(record["scope"])
            self.kpi_records_published.labels(window).inc()
            for name, value in record.items():
                if name not in _KPI_LABELS and isinstance(value, int | float):
                    self.kpi.labels(window, scope, name).set(value)
            end = datetime.fromisoformat(record["end"].replace("Z", "+00:00")).timestamp()
            if end >= (self._kpi_end.get(window) or 0.0):
                self._kpi_end[window] = end
                self.kpi_window_end.labels(window).set(end)

    def set_experiment_results(self, records: list[dict[str, Any]]) -> None:
        """Export the experiment results just published (schemas/experiment_result.schema.json)."""
        for record in records:
            experiment = record["experiment"]
            self.experiment_results_published.inc()
            self.experiment_srm_p_value.labels(experiment).set(record["srm_p_value"])
            for variant, users in record["users"].items():
                self.experiment_users.labels(experiment, variant).set(users)
            for row in record["results"]:
                labels = (experiment, row["variant"], row["metric"])
                self.experiment_p_value.labels(*labels).set(row["p_value"])
                lower, upper = row["interval"]
                if row["mean"] is not None and row["control_mean"] is not None:
                    estimate = row["mean"] - row["control_mean"]
                    self.experiment_difference.labels(*labels, "estimate").set(estimate)
                for bound, value in (("lower", lower), ("upper", upper)):
                    if value is not None:
                        self.experiment_difference.labels(*labels, bound).set(value)

    def add(self, tally: Tally) -> None:
        """Add a batch's tally to the counters (the tally is left as it was)."""
        self.records_received.inc(tally.received)
        for event_type, n in tally.consumed.items():
            self.events_consumed.labels(event_type).inc(n)
        for reason, n in tally.rejected.items():
            self.events_rejected.labels(reason).inc(n)
        for kind, n in tally.published.items():
            self.scores_published.labels(kind).inc(n)
        if tally.deduplicated:
            self.events_deduplicated.inc(tally.deduplicated)
        if tally.already_applied:
            self.events_already_applied.inc(tally.already_applied)
        if tally.sessions_closed:
            self.sessions_closed.inc(tally.sessions_closed)
        if tally.timer_errors:
            self.timer_errors.inc(tally.timer_errors)
        if tally.churn_promotions:
            self.churn_promotions.inc(tally.churn_promotions)
        if tally.churn_rescores:
            self.churn_rescores.inc(tally.churn_rescores)
        if tally.kpi_late:
            self.kpi_late_events.inc(tally.kpi_late)
        if tally.learning_published:
            self.learning_published.inc(tally.learning_published)
        if tally.states_evicted:
            self.states_evicted.inc(tally.states_evicted)
        if tally.states_read_back:
            self.states_read_back.inc(tally.states_read_back)
        if tally.timers_woken:
            self.timers_woken.inc(tally.timers_woken)
        for outcome, n in tally.learning_records.items():
            self.learning_records.labels(outcome).inc(n)
        for policy, n in tally.artwork_shows.items():
            self.artwork_shows.labels(policy).inc(n)
        for policy, n in tally.artwork_takes.items():
            self.artwork_takes.labels(policy).inc(n)
        for reason, n in tally.catalog_rejected.items():
            self.catalog_rejected.labels(reason).inc(n)
        for (kind, status), n in tally.actions.items():
            self.actions.labels(kind, status).inc(n)
        for (kind, reason), n in tally.actions_suppressed.items():
            self.actions_suppressed.labels(kind, reason).inc(n)
        for reason, n in tally.consent_refused.items():
            self.consent_refused.labels(reason).inc(n)
        for reason, n in tally.experiments_refused.items():
            self.experiments_refused.labels(reason).inc(n)
