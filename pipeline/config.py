"""One typed, frozen settings object: every knob of ottscore, each an environment variable.

Nothing else in ottscore reads ``os.environ``. Every field maps to ``OTTSCORE_<FIELD>``
(upper case), except the Kafka bootstrap servers, which also answer to the standard
``KAFKA_BOOTSTRAP_SERVERS``. Secrets are :class:`~pydantic.SecretStr` and masked when printed.

Examples
--------
>>> s = Settings(session_gap_s=600)
>>> s.session_gap_s, s.topic_events, s.churn_horizon_s
(600.0, 'ott.events', 1209600.0)
>>> Settings(kafka_sasl_password="hunter2").kafka_sasl_password
SecretStr('**********')
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """ottscore settings; see the README's configuration table for the same list."""

    model_config = SettingsConfigDict(env_prefix="OTTSCORE_", frozen=True, extra="ignore")

    # --- Kafka connection -------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "OTTSCORE_KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"
        ),
        description="Comma-separated host:port list of the Kafka cluster.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str = Field("", description="SASL user name.")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (secret).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")

    # --- topics -----------------------------------------------------------------------
    topic_events: str = Field("ott.events", description="Input events, key = user_id.")
    topic_dlq: str = Field("ott.events.dlq", description="Rejected input with a reason.")
    topic_scores_churn: str = Field(
        "ott.scores.churn", description="Churn risk per session end and after set days of silence."
    )
    topic_scores_personalization: str = Field(
        "ott.scores.personalization", description="Top-K items per user."
    )
    topic_signals: str = Field("ott.signals", description="Risk transitions per user.")
    topic_actions: str = Field(
        "ott.actions",
        description="CRM triggers per user (sent, or withheld by a holdout); "
        "schemas/action.schema.json.",
    )
    topic_consent: str = Field(
        "ott.consent",
        description="Opt-outs (compacted), key = user_id; schemas/consent.schema.json.",
    )
    topic_models: str = Field("ott.models", description="Signed model snapshots (compacted).")
    topic_catalog: str = Field("ott.catalog", description="Item catalog (compacted), optional.")
    topic_experiments: str = Field(
        "ott.experiments",
        description="Experiment definitions (compacted), key = experiment id; "
        "schemas/experiment.schema.json.",
    )
    topic_state_quarantine: str = Field(
        "ott.state.quarantine", description="Stored user states no release can read, with a reason."
    )
    topic_kpi_partials: str = Field(
        "ott.kpis.partials",
        description="Each partition's closed KPI windows, for the combining agent (one "
        "partition; internal).",
    )
    topic_kpis: str = Field(
        "ott.kpis", description="Business KPIs per closed window and scope (key = window)."
    )
    topic_experiment_results: str = Field(
        "ott.experiments.results",
        description="Each experiment's always-valid results as event time passes (compacted, "
        "key = experiment id); schemas/experiment_result.schema.json.",
    )
    topic_learning: str = Field(
        "ott.learning",
        description="Each partition's learning per epoch of shared learning, for the merger "
        "(one partition; internal).",
    )
    topic_partitions: int = Field(
        4, ge=1, description="Partitions of the topics ottscore creates (input and tables)."
    )
    topic_replication: int = Field(1, ge=1, description="Replication factor of created topics.")

    # --- worker -----------------------------------------------------------------------
    app_id: str = Field("ottscore", description="Faust app id: consumer group and table prefix.")
    store: str = Field(
        "rocksdb://", description="Faust table store: rocksdb:// in production, memory:// in tests."
    )
    data_dir: Path = Field(
        Path(".ottscore/worker"), description="Worker data directory (RocksDB files)."
    )
    rocksdb_block_cache_mb: int = Field(
        64,
        ge=1,
        description="RocksDB block cache shared by all of a worker's databases (every partition "
        "of its state tables), MiB.",
    )
    rocksdb_write_buffer_mb: int = Field(
        16,
        ge=1,
        description="RocksDB write buffer (memtable) of each partition's database, MiB; "
        "up to 3 are held.",
    )
    rocksdb_memtables_mb: int = Field(
        64,
        ge=1,
        description="RocksDB memtables of all of a worker's databases together, MiB: past it "
        "they are flushed to disk.",
    )
    worker_web_port: int = Field(6066, description="Faust's own web server port.")
    worker_web_host: str = Field("127.0.0.1", description="Faust web server bind address.")
    batch_max_events: int = Field(
        2000,
        ge=1,
        description="Most records the worker takes from one fetch and processes as a batch.",
    )
    user_cache_max: int = Field(
        0,
        ge=0,
        description="Most user states a worker holds as objects: beyond it, the least "
        "recently used states already in the store are evicted and read back at their "
        "user's next event or timer (their timers stay); 0: every state stays.",
    )

    kafka_session_timeout_s: float = Field(
        30.0,
        ge=6,
        le=300,
        description="Consumer-group session timeout: a worker silent this long (killed) loses "
        "its partitions to the others; heartbeats every tenth of it.",
    )
    kafka_fetch_max_wait_s: float = Field(
        0.02,
        gt=0,
        le=5,
        description="Longest the broker holds a worker's fetch that finds no new record; "
        "records of other partitions wait behind it (Faust's own is 1.5 s).",
    )
    kafka_commit_interval_s: float = Field(
        2.8,
        gt=0,
        le=600,
        description="Seconds between two commits: the changed user states go to the "
        "changelog, then the input offsets are committed (Faust's default). Shorter: less "
        "to replay after a crash, more state writes.",
    )
    kafka_commit_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a commit may take, the producer's flush included; past it the "
        "commit is abandoned, counted, and tried again at the next commit interval.",
    )
    kafka_startup_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a worker's start-up reads (topic limits, the catalog) wait for "
        "the broker; a catalog read cut short goes on at the next refresh.",
    )
    producer_max_pending: int = Field(
        50_000,
        ge=1_000,
        description="Most records handed to the producer and not yet acknowledged; the "
        "worker fetches no more input while there are more (back-pressure).",
    )
    allow_unverified_faust: bool = Field(
        False,
        description="Start the worker on a faust-streaming or aiokafka other than the "
        "versions its patches were verified on (run the fault tests first).",
    )
    fault_crash_at: str = Field(
        "",
        pattern=r"^([a-z_]+(:[0-9]+)?)?$",
        description="Fault injection for tests: STEP:N kills the worker (SIGKILL) the N-th "
        "time it reaches STEP of its batch and commit sequence (agents/worker/faults.py); empty "
        "in production.",
    )
    experiments_refresh_s: float = Field(
        10.0,
        gt=0,
        description="Seconds between a worker's reads of the experiments topic: a new "
        "definition or a stop takes effect within this (each read takes only what changed).",
    )
    kpi_lateness_s: float = Field(
        300.0,
        ge=0,
        description="Allowed lateness of the KPI windows, in seconds of event time: an "
        "event older than the watermark by more is counted late and not applied; a window "
        "closes this long after its end plus the 30 minutes a click or search can convert.",
    )
    experiment_window_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="Seconds of event time from a user's first event in an experiment over "
        "which the user is judged: the user's values enter the live results once it has "
        "passed (the same as `ottscore experiment report`).",
    )
    catalog_refresh_s: float = Field(
        60.0,
        gt=0,
        description="Seconds between a worker's reads of the catalog and consent topics (each "
        "reads only the records published since the last).",
    )

    # --- metrics ----------------------------------------------------------------------
    metrics_host: str = Field("127.0.0.1", description="Prometheus endpoint bind address.")
    metrics_port: int = Field(
        9300, description="Port of /metrics, /healthz and /readyz (0 disables them)."
    )
    health_stale_s: float = Field(
        30.0, gt=0, description="Event-loop silence after which /healthz answers 503, in seconds."
    )
    commit_stale_s: float = Field(
        120.0,
        gt=0,
        description="Seconds processed records may wait for a successful commit before "
        "/healthz answers 503 (outputs or offsets cannot reach Kafka).",
    )
    lag_interval_s: float = Field(
        5.0, gt=0, description="Seconds between two reads of the input end offsets (lag metric)."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Worker log lines: text, or one JSON object per line."
    )

    # --- input validation -------------------------------------------------------------
    max_event_bytes: int = Field(
        16_384, ge=256, description="Largest accepted input record, in bytes."
    )
    dlq_max_message_bytes: int = Field(
        1_048_576,
        ge=16_384,
        description="max.message.bytes of the dead-letter topic, set when ottscore creates "
        "it; every dead-letter record (key and value, originals cut to fit) stays within it.",
    )
    max_future_skew_s: float = Field(
        86_400.0,
        ge=0,
        description="Events stamped further than this ahead of the wall clock are rejected.",
    )
    dedupe_window_s: float = Field(
        600.0, ge=0, description="Event-time window in which a repeated event_id is a retry."
    )
    dedupe_max_ids: int = Field(
        32, ge=1, description="Most recent event ids remembered per user for de-duplication."
    )

    # --- sessions and models ----------------------------------------------------------
    session_gap_s: float = Field(
        1800.0, gt=0, description="Event-time inactivity that ends a session, in seconds."
    )
    churn_horizon_days: float = Field(
        14.0, gt=0, description="Event-time inactivity after which a user has churned, in days."
    )

    risk_medium: float = Field(
        0.3, gt=0, lt=1, description="Churn probability from which the risk band is medium."
    )
    risk_high: float = Field(
        0.6, gt=0, lt=1, description="Churn probability from which the risk band is high."
    )

    churn_model: Literal["logreg", "tree", "poisson"] = Field(
        "logreg", description="Churn champion: the model whose scores are published."
    )
    churn_challenger: Literal["none", "logreg", "tree", "poisson"] = Field(
        "poisson",
        description="Churn challenger run in shadow, promoted to champion if it proves "
        "better; none to disable.",
    )
    churn_rescore_days: tuple[int, ...] = Field(
        (3, 7, 10),
        description="Days of a user's silence (event time, after their last session) at "
        "which their churn risk is scored again, by the inactivity model; a JSON list, "
        "each below the churn horizon; [] for none.",
    )
    churn_promotion_alpha: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Level of the always-valid test that promotes the churn challenger to "
        "champion when its prequential AUC is higher (the chance a challenger no better is "
        "ever promoted); 0 never promotes.",
    )
    audience_active_days: float = Field(
        7.0,
        gt=0,
        description="Audiences: a user with an event within this many days (event time) "
        "is active (a fan or a client), others lapsed.",
    )
    audience_fan_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Audiences: the least share of a user's recent watch time in a genre "
        "that makes them a fan (or, lapsed, a prospect) of it.",
    )
    audience_refresh_s: float = Field(
        60.0, gt=0, description="Wall-clock seconds between two counts of the audience gauges."
    )
    reco_mode: Literal["implicit", "explicit"] = Field(
        "implicit",
        description="implicit: learn from plays/clicks; explicit: learn ratings (MovieLens).",
    )
    reco_k: int = Field(10, ge=1, le=100, description="Items per personalisation list.")
    reco_ablate: tuple[Literal["popularity", "genre", "sequel", "taste"], ...] = Field(
        (),
        description="Ranking signals left out of the lists, for an ablation study "
        "(docs/ranker_ablation.py); a JSON list, empty in production.",
    )
    reco_debounce_s: float = Field(
        300.0,
        ge=0,
        description="Event-time seconds between two personalisation lists of one user.",
    )
    share_every_s: float = Field(
        0.0,
        ge=0,
        description="Shared learning between partitions: each time the event time a worker "
        "reached enters a new epoch of this many seconds, each of its partitions publishes "
        "what its global models learnt (trending, chosen next, genre counts, churn and "
        "ranker weights and scalers), and folds the others' merge (docs/quality.md); 0: each "
        "partition learns alone.",
    )
    share_merge_within_s: float = Field(
        1.0,
        gt=0,
        description="Shared learning: the merger merges the partitions' deltas that arrive "
        "within this many seconds (wall clock) into one record per partition.",
    )
    segments: int = Field(6, ge=2, le=32, description="Number of behavioural segments.")
    artwork_policy: Literal["bandit", "popular", "random"] = Field(
        "bandit",
        description="How each listed item's artwork is picked, for items the catalog gives "
        "artworks: bandit (per the user's context, artwork_context), popular (the most-taken "
        "artwork), random; an experiment's artwork_policy knob overrides it.",
    )
    artwork_context: Literal["device", "device_genre"] = Field(
        "device",
        description="The artwork bandit's context: the device the user watches on most "
        "(device), or that device and then their favourite genre within it (device_genre: "
        "for catalogs whose viewers' taste in pictures follows genres; each genre's bucket "
        "learns from fewer shows); an experiment's artwork_context knob overrides it.",
    )
    artwork_explore: float = Field(
        0.02,
        gt=0,
        le=1,
        description="Floor of the artwork bandit's exploration: each artwork keeps at least "
        "this share over its item's artwork count of being shown.",
    )
    artwork_sticky_s: float = Field(
        3_600.0,
        ge=0,
        description="Event-time seconds a user keeps the artwork the policy chose as its best "
        "for an item (a list that explores shows another without replacing it).",
    )
    artwork_show_window_s: float = Field(
        86_400.0,
        gt=0,
        description="Event-time seconds a show (an item of the latest list, with its artwork, "
        "at the start of a session) stays open for a click; then it is a miss.",
    )
    artwork_take_window_s: float = Field(
        3_600.0,
        gt=0,
        description="Event-time seconds after a click on a shown artwork within which the play "
        "must reach artwork_take_play_s for a take.",
    )
    artwork_take_play_s: float = Field(
        60.0, ge=0, description="Seconds of playback after the click that make it a take."
    )

    # --- CRM triggers -----------------------------------------------------------------
    crm_triggers: tuple[Literal["win_back", "at_risk", "continue_series", "new_for_fans"], ...] = (
        Field(
            ("win_back", "at_risk", "continue_series", "new_for_fans"),
            description="The CRM triggers published to the actions topic; a JSON list, [] for "
            "none.",
        )
    )
    crm_daily_cap: int = Field(
        2, ge=0, description="Most CRM triggers per user per event-time (UTC) day."
    )
    crm_type_gap_s: float = Field(
        259_200.0,
        ge=0,
        description="Event-time seconds before a user may get a trigger of the same type again.",
    )
    crm_risk_exit: float = Field(
        0.45,
        gt=0,
        lt=1,
        description="Churn probability below which a user at risk leaves it (they enter at "
        "risk_high): the hysteresis of at_risk and win_back.",
    )
    crm_expiry_s: float = Field(
        259_200.0, gt=0, description="Event-time seconds from a trigger to its expires_at."
    )
    crm_trending_top: int = Field(
        20,
        ge=1,
        description="The most played titles of a partition that new_for_fans offers to fans "
        "of their genres.",
    )

    # --- model snapshots --------------------------------------------------------------
    snapshot_key: SecretStr = Field(
        SecretStr(""),
        description="HMAC key that signs model snapshots and, with sharing on, the "
        "partitions' learning and its merges; unsigned or mis-signed ones are refused. Empty "
        "disables snapshots, and leaves learning records unsigned.",
    )
    snapshot_interval_s: float = Field(
        60.0, gt=0, description="Wall-clock seconds between model snapshots of a partition."
    )

    # --- local broker (demo and tests) ------------------------------------------------
    broker_home: Path = Field(
        Path(".ottscore/kafka"), description="Local broker: jars, data and log directory."
    )
    broker_port: int = Field(9092, description="Local broker client port on 127.0.0.1.")
    broker_controller_port: int = Field(9093, description="Local broker KRaft controller port.")

    @model_validator(mode="after")
    def _rescores_within_the_horizon(self) -> Settings:
        days = self.churn_rescore_days
        if any(d <= 0 for d in days) or list(days) != sorted(set(days)):
            raise ValueError(f"churn_rescore_days must increase and be positive, not {days}")
        if days and days[-1] >= self.churn_horizon_days:
            raise ValueError(
                f"churn_rescore_days {days} must stay below the churn horizon "
                f"({self.churn_horizon_days} days): a user silent that long has churned"
            )
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for a process started with them.

        >>> Settings(session_gap_s=60).to_env()["OTTSCORE_SESSION_GAP_S"]
        '60.0'
        """
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "kafka_bootstrap_servers" or value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, tuple):  # read back as JSON
                value = json.dumps(list(value))
            env[f"OTTSCORE_{name.upper()}"] = str(value)
        return env

    @cached_property
    def churn_horizon_s(self) -> float:
        """The churn horizon in seconds."""
        return self.churn_horizon_days * 86_400.0
