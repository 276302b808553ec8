"""The ``ottscore`` command line: worker, broker, simulate, replay, evaluate, experiment, bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import Settings

__all__ = ["main"]


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    # Faust reads ``--loop`` from sys.argv when it is first imported, which happens
    # below, before ``app.main()`` sees the arguments: select uvloop here, before any
    # event loop exists (the worker ran on asyncio's default loop without this).
    import mode.loop

    mode.loop.use("uvloop")

    from agents.worker.app import build_app
    from agents.worker.faust_patches import UnverifiedVersion, check_versions
    from agents.worker.kafka import ensure_topics, topic_max_message_bytes

    try:
        check_versions(allow_unverified=settings.allow_unverified_faust)
    except UnverifiedVersion as refused:
        print(f"ottscore worker: {refused}", file=sys.stderr)
        return 2
    ensure_topics(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings)
    # a dead-letter topic created before (or by someone else) may take less than configured
    app.ottscore.limit_dead_letters(topic_max_message_bytes(settings, settings.topic_dlq))
    app.ottscore.load_catalog(app.ottscore.catalog.read())  # the refreshes read what changed
    app.ottscore.load_experiments(app.ottscore.experiment_definitions.read())
    app.ottscore.load_consent(app.ottscore.consent.read())
    sys.argv = ["ottscore", "worker", "--loglevel", args.loglevel]
    app.main()
    return 0  # pragma: no cover - app.main() exits


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from agents.devtools.broker import LocalKafka

    broker = LocalKafka.from_settings(settings)
    if args.action == "start":
        broker.start()
        print(f"kafka running on {broker.bootstrap} (log: {broker.status().log_file})")
    elif args.action == "stop":
        broker.stop()
        print("kafka stopped")
    else:
        status = broker.status()
        state = f"running (pid {status.pid})" if status.running else "stopped"
        print(f"kafka {state} on {status.bootstrap}; log {status.log_file}")
        return 0 if status.running else 3
    return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.sim.simulate import SimulationConfig, Simulator, write_catalog, write_jsonl

    if args.closed_loop:
        return _simulate_closed_loop(args, settings)

    simulator = Simulator(
        SimulationConfig(
            users=args.users,
            days=args.days,
            seed=args.seed,
            bad_rate=args.bad_rate,
            duplicate_rate=args.duplicate_rate,
            scenario=args.scenario,
        )
    )
    if args.catalog_out:
        write_catalog(simulator.catalog(), args.catalog_out)
    if args.out:
        count = write_jsonl(simulator.records(), args.out)
        print(f"wrote {count} records to {args.out}", file=sys.stderr)
    if args.to_kafka:
        from agents.devtools.produce import produce, publish_catalog

        publish_catalog(settings, simulator.catalog())
        count = produce(settings, simulator.records(), rate=args.rate)
        print(f"produced {count} records to {settings.topic_events}", file=sys.stderr)
    return 0


def _simulate_closed_loop(args: argparse.Namespace, settings: Settings) -> int:
    """Users who see the lists the core publishes to them, in process; the events to a file."""
    if args.scenario != "baseline":
        raise ValueError("--scenario applies to the open-loop simulator; drop --closed-loop")
    from pipeline.core.processor import Processor
    from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig
    from pipeline.sim.list_policies import ProcessorLists
    from pipeline.sim.simulate import write_catalog, write_jsonl

    if args.to_kafka or not args.out:
        raise ValueError("--closed-loop runs in process: give --out (and --catalog-out)")
    loop = ClosedLoop(
        ClosedLoopConfig(users=args.users, days=args.days, seed=args.seed, bad_rate=args.bad_rate)
    )
    processor = Processor(settings, clock=lambda: 4_102_444_800.0)  # the loop's own time
    if args.experiments:
        from pipeline.serde.jsonl import read_jsonl

        processor.load_experiments(read_jsonl(args.experiments))
    run = loop.run(ProcessorLists(processor, catalog=loop.catalog.records()))
    if args.catalog_out:
        write_catalog(loop.catalog.records(), args.catalog_out)
    count = write_jsonl(run.records, args.out)
    lists = sum(len(shown) for shown in run.impressions.values())
    print(f"wrote {count} records to {args.out} ({lists} home screens seen)", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from agents.devtools.produce import produce
    from pipeline.serde.jsonl import read_jsonl_records

    count = produce(settings, read_jsonl_records(args.file), speed=args.speed)
    print(f"produced {count} records to {settings.topic_events}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.offline.evaluate import evaluate, format_report

    if args.mode:
        settings = settings.model_copy(update={"reco_mode": args.mode})
    report = evaluate(
        args.file,
        settings=settings,
        catalog_path=args.catalog,
        report_path=args.report,
        predictions_path=args.predictions,
        plot_path=args.plot,
        partitions=args.partitions,
        share_every_s=args.share_every_s,
        share_mode=args.share_mode,
    )
    print(format_report(report))
    return 0


def _kpis(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    from pipeline.offline.kpis import kpis_of_file

    windows, returns, late = kpis_of_file(
        args.file, settings=settings, partitions=args.partitions, lateness_s=args.lateness_s
    )
    with open(args.out, "wb") as out:
        for record in [*windows, *returns]:
            out.write(orjson.dumps(record) + b"\n")
    print(
        f"wrote {len(windows)} window and {len(returns)} 7-day return records to {args.out} "
        f"({late} late events not applied)",
        file=sys.stderr,
    )
    return 0


def _audience(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    from pipeline.core.events import format_ts
    from pipeline.offline.audiences import audience_report, title_genres
    from pipeline.serde.jsonl import read_jsonl

    catalog = list(read_jsonl(args.catalog))
    try:
        genres = [args.genre] if args.genre else title_genres(catalog, args.title)
    except KeyError as exc:
        raise ValueError(f"{exc.args[0]} (read from {args.catalog})") from None
    report = audience_report(args.file, catalog, genres=genres, settings=settings)
    print(f"audiences of {', '.join(genres) or 'no genre'} at {format_ts(report['at_ms'])}")
    for name, size in report["sizes"].items():
        print(f"{name:<8}{size:>10,}")
    if args.export:
        with open(args.export, "wb") as out:
            for name, ids in report["members"].items():
                for user_id in ids:
                    out.write(orjson.dumps({"user_id": user_id, "audience": name}) + b"\n")
        print(f"wrote the members to {args.export}", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.offline.movielens import import_movielens

    count = import_movielens(args.directory, args.out, catalog_out=args.catalog_out)
    print(f"wrote {count} events to {args.out}", file=sys.stderr)
    return 0


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    from agents.devtools.produce import tail

    tail(settings, args.topic, from_beginning=args.from_beginning, limit=args.max)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from agents.devtools.demo import run_demo

    return run_demo(settings, users=args.users, rate=args.rate, bad_rate=args.bad_rate)


def _experiment(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from agents.experiments import create, defined, format_table, stop
    from pipeline.experiments.definition import DefinitionRefused

    try:
        if args.action == "create":
            text = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
            experiment = create(settings, text)
            print(f"experiment {experiment.id} published to {settings.topic_experiments}")
        elif args.action == "stop":
            experiment = stop(settings, args.id, at=args.at)
            print(f"experiment {experiment.id} stops at {args.at or 'now'}")
        elif args.action == "report":
            from pipeline.experiments.report import format_report, plot_report
            from pipeline.offline.experiment_report import report_events
            from pipeline.serde.jsonl import read_jsonl

            definitions: list[object] = (
                list(read_jsonl(args.definitions))
                if args.definitions
                else [known.definition for known in defined(settings).values()]
            )
            report = report_events(
                args.events, definitions, args.id, settings=settings, catalog_path=args.catalog
            )
            print(format_report(report))
            if args.plot:
                plot_report(report, str(args.plot))
        else:
            experiments = [known.experiment for known in defined(settings).values()]
            print(format_table(experiments, now_ms=int(time.time() * 1000)))
    except DefinitionRefused as refused:
        print(f"ottscore experiment: refused: {refused}", file=sys.stderr)
        return 2
    except KeyError as missing:
        print(f"ottscore experiment: no experiment {missing} on the topic", file=sys.stderr)
        return 2
    return 0


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from agents.devtools.bench import format_report, run_bench

    report = run_bench(
        settings,
        events=args.events,
        users=args.users,
        items=args.items,
        partitions=args.partitions,
        runs=args.runs,
        latency_seconds=args.latency_seconds,
        latency_rate=args.latency_rate,
        cache_users=args.cache_users,
        skip=[name for names in args.skip for name in names.split(",") if name],
        report_path=args.report,
    )
    print(format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ottscore``."""
    parser = argparse.ArgumentParser(
        prog="ottscore",
        description="Real-time churn and personalisation scores from OTT viewing events.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="on a failure, print the traceback too"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a Faust worker (the ingest agent)")
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warn", "error"])
    worker.set_defaults(func=_worker)

    broker = sub.add_parser("broker", help="the local single-node Kafka (KRaft)")
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.set_defaults(func=_broker)

    sim = sub.add_parser("simulate", help="realistic synthetic OTT traffic")
    sim.add_argument("--users", type=int, default=1000)
    sim.add_argument("--days", type=float, default=30.0)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument(
        "--scenario",
        default="baseline",
        choices=["baseline", "breaks", "sudden", "returners", "all"],
        help="the audience's behaviours (pipeline/sim/scenarios.py; default baseline)",
    )
    target = sim.add_argument_group("output (at least one)")
    target.add_argument("--to-kafka", action="store_true", help="produce to the events topic")
    target.add_argument("--out", type=Path, help="write records to a JSONL file")
    sim.add_argument("--catalog-out", type=Path, help="write the catalog to a JSONL file")
    sim.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="with --to-kafka: records per second of wall time (0 = as fast as possible)",
    )
    sim.add_argument(
        "--bad-rate", type=float, default=0.0, help="share of extra malformed records (e.g. 0.02)"
    )
    sim.add_argument(
        "--duplicate-rate", type=float, default=0.0, help="share of client retries (exact re-sends)"
    )
    sim.add_argument(
        "--closed-loop",
        action="store_true",
        help="users see the lists the core publishes to them and react (in process, --out)",
    )
    sim.add_argument(
        "--experiments", type=Path, help="with --closed-loop: JSONL experiment definitions to run"
    )
    sim.set_defaults(func=_simulate)

    replay = sub.add_parser("replay", help="produce a JSONL file of events in event-time order")
    replay.add_argument("file", type=Path)
    replay.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="event-time seconds per wall second (0 = as fast as possible)",
    )
    replay.set_defaults(func=_replay)

    ev = sub.add_parser("evaluate", help="run the processing core over a file; report quality")
    ev.add_argument("file", type=Path, help="JSONL events (sorted by ts in memory if need be)")
    ev.add_argument("--catalog", type=Path, help="JSONL catalog loaded before the events")
    ev.add_argument(
        "--mode",
        choices=["implicit", "explicit"],
        help="personalisation mode (default: OTTSCORE_RECO_MODE, else implicit)",
    )
    ev.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="place records on N partitions as Kafka does; each partition's models learn "
        "from its users only, as in a worker (default 1)",
    )
    ev.add_argument(
        "--share-every-s",
        type=float,
        default=0.0,
        metavar="S",
        help="with several partitions, merge what each partition's models learnt into "
        "every other's each S seconds of event time (default 0: each learns alone)",
    )
    ev.add_argument(
        "--share-mode",
        choices=["sum", "mean", "workers"],
        default="sum",
        help="sum: every partition takes the others' learning at each epoch at once, SGD "
        "steps summed; mean: steps averaged; workers: as the workers exchange it, through "
        "the merger, each merge folded where it lands in its partition's log (default sum)",
    )
    ev.add_argument("--report", type=Path, required=True, help="write the JSON report here")
    ev.add_argument("--plot", type=Path, help="draw rolling quality over event time (PNG)")
    ev.add_argument(
        "--predictions", type=Path, help="write one JSON line per labelled churn prediction"
    )
    ev.set_defaults(func=_evaluate)

    aud = sub.add_parser(
        "audience", help="fans, clients and lapsed members of a genre or a title over a file"
    )
    aud.add_argument("file", type=Path, help="JSONL events")
    aud.add_argument("--catalog", type=Path, required=True, help="JSONL catalog")
    which = aud.add_mutually_exclusive_group(required=True)
    which.add_argument("--genre", help="a genre, as the catalog names it (e.g. scifi)")
    which.add_argument("--title", help="a catalog item id: the audiences of its genres")
    aud.add_argument(
        "--export", type=Path, help="write one JSON line {user_id, audience} per member"
    )
    aud.set_defaults(func=_audience)

    kpis = sub.add_parser("kpis", help="KPI windows (hour, day) of a file of events")
    kpis.add_argument("file", type=Path, help="JSONL events")
    kpis.add_argument("--out", type=Path, required=True, help="write JSONL KPI records here")
    kpis.add_argument("--partitions", type=int, default=1, help="as the workers' topic has")
    kpis.add_argument(
        "--lateness-s",
        type=float,
        default=None,
        help="event time a window waits for late events (default: OTTSCORE_KPI_LATENESS_S)",
    )
    kpis.set_defaults(func=_kpis)

    imp = sub.add_parser("import", help="turn a public data set into events")
    imp.add_argument("source", choices=["movielens"])
    imp.add_argument("directory", type=Path, help="ml-100k (u.data) or ml-latest (ratings.csv)")
    imp.add_argument("--out", type=Path, required=True, help="write events (JSONL) here")
    imp.add_argument("--catalog-out", type=Path, help="write the catalog (JSONL) here")
    imp.set_defaults(func=_import)

    tail = sub.add_parser("tail", help="pretty-print the records of a topic")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=0, help="stop after this many (0 = follow)")
    tail.set_defaults(func=_tail)

    demo = sub.add_parser("demo", help="broker + worker + simulator with a live view")
    demo.add_argument("--users", type=int, default=2000)
    demo.add_argument("--rate", type=float, default=2000.0, help="records per second")
    demo.add_argument("--bad-rate", type=float, default=0.01)
    demo.set_defaults(func=_demo)

    experiment = sub.add_parser("experiment", help="define, list and stop A/B experiments")
    actions = experiment.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="check a definition and publish it")
    create.add_argument("file", type=Path, help="the JSON definition; - reads standard input")
    actions.add_parser("list", help="the experiments on the topic, with their state now")
    stop = actions.add_parser("stop", help="stop an experiment (in event time)")
    stop.add_argument("id")
    stop.add_argument("--at", help="RFC 3339 event time of the stop (default: now)")
    report = actions.add_parser("report", help="each metric per variant, always-valid p-values")
    report.add_argument("id")
    report.add_argument("--events", type=Path, required=True, help="JSONL events to judge on")
    report.add_argument(
        "--definitions", type=Path, help="JSONL definitions (default: the experiments topic)"
    )
    report.add_argument("--catalog", type=Path, help="JSONL catalog loaded before the events")
    report.add_argument("--plot", type=Path, help="draw p-values and intervals over event time")
    experiment.set_defaults(func=_experiment)

    bench = sub.add_parser("bench", help="throughput, latency and scaling of the worker")
    bench.add_argument("--events", type=int, default=200_000)
    bench.add_argument("--users", type=int, default=20_000)
    bench.add_argument("--items", type=int, default=5_000)
    bench.add_argument("--partitions", type=int, default=4)
    bench.add_argument("--runs", type=int, default=1, help="repeat throughput runs; medians")
    bench.add_argument("--latency-seconds", type=float, default=60.0)
    bench.add_argument("--latency-rate", type=float, default=2000.0, help="records per second")
    bench.add_argument(
        "--cache-users",
        type=int,
        help="user states the bounded-cache worker holds (default: a tenth of the users seen)",
    )
    bench.add_argument(
        "--skip",
        action="append",
        default=[],
        help="raw, baseline, quix, worker, bounded, core, latency or two_workers (repeat or "
        "comma-separate)",
    )
    bench.add_argument("--report", type=Path, help="write the JSON report here")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ottscore command line."""
    args = build_parser().parse_args(argv)
    if args.command == "simulate" and not (args.to_kafka or args.out or args.catalog_out):
        build_parser().error("simulate needs --to-kafka, --out or --catalog-out")
    try:
        code = args.func(args, Settings())
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"ottscore {args.command}: {explain(exc)}", file=sys.stderr)
        code = 1
    raise SystemExit(code)


def explain(exc: BaseException) -> str:
    r"""One line that says what went wrong and what to do (the traceback is for --debug).

    >>> explain(FileNotFoundError(2, "No such file or directory", "events.jsonl"))
    'events.jsonl: no such file'
    >>> explain(ValueError("bad\nthings"))
    'ValueError: bad (run with --debug for the traceback)'
    """
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError
    from pydantic import ValidationError

    from agents.devtools.broker import BrokerError

    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename}: no such file"
    if isinstance(exc, IsADirectoryError | PermissionError):
        return f"{exc.filename}: {exc.strerror.lower() if exc.strerror else 'cannot read it'}"
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return (
            f"no Kafka broker answers ({first_line}): start one with `ottscore broker "
            "start`, or point KAFKA_BOOTSTRAP_SERVERS at one"
        )
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        return f"invalid setting {where}: {error['msg']} (see the README's configuration table)"
    if isinstance(exc, BrokerError):
        return first_line
    return f"{type(exc).__name__}: {first_line} (run with --debug for the traceback)"
