"""Offline evaluation: ordering, the report, predictions, the plot and the command line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from agents.cli import main
from pipeline.config import Settings
from pipeline.core.events import Event, EventDecoder, encode_event, parse_ts
from pipeline.offline.evaluate import check_predictions, evaluate, read_event_file
from pipeline.serde.jsonl import read_jsonl
from pipeline.sim.simulate import SimulationConfig, Simulator, write_catalog, write_jsonl

DESIGN_KEYS = {
    "events", "events_per_s", "dlq", "churn.samples", "churn.auc", "churn.logloss",
    "reco.hit_rate_at_10", "reco.trending_hit_rate_at_10",
}  # fmt: skip


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Five weeks of 40 viewers with 1 % malformed records and 1 % retries, and the catalog."""
    directory = tmp_path_factory.mktemp("simulated")
    simulator = Simulator(
        SimulationConfig(users=40, days=35, seed=11, bad_rate=0.01, duplicate_rate=0.01)
    )
    write_jsonl(simulator.records(), directory / "events.jsonl")
    write_catalog(simulator.catalog(), directory / "catalog.jsonl")
    return directory / "events.jsonl", directory / "catalog.jsonl"


@pytest.fixture(scope="module")
def evaluated(simulated: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One evaluation of the simulated traffic, with every output file, in a directory."""
    events, catalog = simulated
    out = tmp_path_factory.mktemp("evaluated")
    report = evaluate(
        events,
        settings=Settings(),
        catalog_path=catalog,
        report_path=out / "report.json",
        predictions_path=out / "predictions.jsonl",
        plot_path=out / "report.png",
        progress=False,
    )
    (out / "returned.json").write_bytes(orjson.dumps(report))
    return out


def search(user: str, ts_ms: int) -> bytes:
    return encode_event(Event(f"{user}-{ts_ms}", "search", user, ts_ms, query="heat"))


def valid_ts(line: bytes) -> int | None:
    event = EventDecoder().decode(line)
    return event.ts_ms if isinstance(event, Event) else None


def quality(report: dict[str, float]) -> dict[str, float]:
    """Drop the speed from a report: it differs between two runs."""
    return {k: v for k, v in report.items() if k != "events_per_s"}


def test_a_file_in_event_time_order_is_read_as_it_is(tmp_path: Path) -> None:
    lines = [search("a", 5), b"", search("b", 5), search("a", 9)]
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    events = read_event_file(path, decoder=EventDecoder())
    assert not events.reordered
    assert events.records == lines
    assert events.keys == [b"a", None, b"b", b"a"]


def test_an_unordered_file_is_sorted_stably_and_rejected_lines_follow_their_predecessor(
    tmp_path: Path,
) -> None:
    far_future = 4_102_444_800_000  # 2100: rejected, so it does not move
    lines = [
        search("c", 30),
        b"not json",
        search("a", 10),
        search("f", far_future),
        search("b", 10),
        b'{"user_id": "d", "ts": "yesterday"}',
        search("e", 20),
    ]
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    events = read_event_file(path, decoder=EventDecoder())
    assert events.reordered
    assert events.records == [lines[i] for i in (2, 3, 4, 5, 6, 0, 1)]
    assert events.keys == [b"a", None, b"b", None, b"e", b"c", None]


def test_report_has_the_documented_keys_and_counts_every_record(
    simulated: tuple[Path, Path], evaluated: Path
) -> None:
    report = orjson.loads((evaluated / "returned.json").read_bytes())
    assert DESIGN_KEYS <= set(report)
    records = simulated[0].read_bytes().count(b"\n")
    assert report["events"] == records
    assert report["dlq"] > 0 and report["events_per_s"] > 0
    assert report["churn.samples"] > 20 and 0 < report["churn.positives"] < report["churn.samples"]
    assert 0.0 <= report["churn.auc"] <= 1.0 and report["churn.logloss"] > 0
    assert 0.0 <= report["reco.trending_hit_rate_at_10"] <= 1.0
    assert "reco.mae" not in report  # implicit mode has no ratings


def test_report_file_is_indented_json_with_sorted_keys(evaluated: Path) -> None:
    text = (evaluated / "report.json").read_text()
    written = orjson.loads(text)
    assert list(written) == sorted(written)
    assert text.startswith('{\n  "')
    returned = orjson.loads((evaluated / "returned.json").read_bytes())
    assert written == returned


def test_predictions_are_labelled_no_earlier_than_predicted(evaluated: Path) -> None:
    settings = Settings()
    lines = list(read_jsonl(evaluated / "predictions.jsonl"))
    assert check_predictions(evaluated / "predictions.jsonl", settings=settings) == len(lines)
    report = orjson.loads((evaluated / "returned.json").read_bytes())
    champion = [p for p in lines if p["model"] == settings.churn_model]
    assert len(champion) == report["churn.samples"]
    assert sum(p["label"] for p in champion) == report["churn.positives"]
    assert all(parse_ts(p["labelled_at"]) >= parse_ts(p["predicted_at"]) for p in lines)
    assert all(0 <= p["churn_probability"] <= 1 for p in lines)


def test_check_predictions_names_a_label_known_too_early(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        b'{"user_id":"u","predicted_at":"2026-01-02T00:00:00.000Z","churn_probability":0.5,'
        b'"label":1,"labelled_at":"2026-01-03T00:00:00.000Z","model":"logreg",'
        b'"last_seen":"2026-01-01T23:30:00.000Z"}\n'
    )
    with pytest.raises(ValueError, match="p.jsonl:1: churn labelled before the horizon"):
        check_predictions(path, settings=Settings())


def test_plot_is_a_png(evaluated: Path) -> None:
    assert (evaluated / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unordered_file_gives_the_quality_of_the_ordered_one_and_says_so(
    simulated: tuple[Path, Path],
    evaluated: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events, catalog = simulated
    lines = events.read_bytes().split(b"\n")[:-1]
    times = np.array([valid_ts(line) or -1 for line in lines])
    before, after = np.maximum.accumulate(times), np.minimum.accumulate(times[::-1])[::-1]
    # a cut with every event before it earlier than every event after it, both valid
    half = next(
        k
        for k in range(len(lines) // 2, len(lines))
        if before[k - 1] < after[k] and times[k] >= 0 and times[0] >= 0
    )
    rotated = tmp_path / "rotated.jsonl"
    rotated.write_bytes(b"\n".join(lines[half:] + lines[:half]) + b"\n")
    decoder = EventDecoder()
    assert (
        read_event_file(rotated, decoder=decoder).records
        == read_event_file(events, decoder=decoder).records
    )
    report = evaluate(rotated, settings=Settings(), catalog_path=catalog, progress=False)
    assert "not in event-time order" in capsys.readouterr().err
    in_order = orjson.loads((evaluated / "returned.json").read_bytes())
    assert quality(orjson.loads(orjson.dumps(report))) == quality(in_order)


def test_cli_imports_movielens_then_evaluates_it_in_explicit_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(
            f"{u},{i},{1 + (u * i) % 5},{1_000_000 + 60 * (u * 7 + i)}\n"
            for u in range(1, 13)
            for i in range(1, 9)
        )
    )
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{i},Film {i},Drama\n" for i in range(1, 9))
    )
    for argv in (
        [
            "import",
            "movielens",
            str(tmp_path),
            "--out",
            str(tmp_path / "e.jsonl"),
            "--catalog-out",
            str(tmp_path / "c.jsonl"),
        ],
        [
            "evaluate",
            str(tmp_path / "e.jsonl"),
            "--catalog",
            str(tmp_path / "c.jsonl"),
            "--mode",
            "explicit",
            "--report",
            str(tmp_path / "r.json"),
        ],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    printed = capsys.readouterr()
    assert "wrote 96 events" in printed.err
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    table = printed.out.splitlines()
    assert [row.split()[0] for row in table] == sorted(report)
    assert ["events", "96"] in [row.split() for row in table]
    assert report["events"] == 96 and report["dlq"] == 0
    assert 0 < report["reco.mae"] <= report["reco.rmse"] < 5
    assert not math.isnan(report["reco.rmse"])


def test_partitions_place_records_as_kafka_does_and_one_partition_is_the_default(
    simulated: tuple[Path, Path], evaluated: Path
) -> None:
    events, catalog = simulated
    default = orjson.loads((evaluated / "returned.json").read_bytes())
    one = evaluate(events, settings=Settings(), catalog_path=catalog, partitions=1, progress=False)
    assert quality(one) == quality(default) and one["partitions"] == 1
    four = evaluate(events, settings=Settings(), catalog_path=catalog, partitions=4, progress=False)
    # the same records, counted the same; the models of four partitions learn apart
    assert (four["events"], four["dlq"], four["partitions"]) == (one["events"], one["dlq"], 4)
    assert quality(four) != quality(one)
    with pytest.raises(ValueError, match="at least 1"):
        evaluate(events, settings=Settings(), partitions=0, progress=False)


def test_with_artworks_the_report_has_the_take_rate_and_each_policy_s_ips_estimate(
    tmp_path: Path,
) -> None:
    """A closed-loop run whose titles have artworks, replayed: the artwork keys appear."""
    from pipeline.core.processor import Processor
    from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig
    from pipeline.sim.list_policies import ProcessorLists

    loop = ClosedLoop(ClosedLoopConfig(users=120, days=14, seed=3, artworks=(4, 10)))
    run = loop.run(ProcessorLists(Processor(Settings(), clock=lambda: 4.1e9),
                                  catalog=loop.catalog_records()))  # fmt: skip
    write_jsonl(run.records, tmp_path / "events.jsonl")
    (tmp_path / "catalog.jsonl").write_bytes(
        b"".join(orjson.dumps(record) + b"\n" for record in loop.catalog_records())
    )
    report = evaluate(tmp_path / "events.jsonl", settings=Settings(),
                      catalog_path=tmp_path / "catalog.jsonl", progress=False)  # fmt: skip
    assert report["artwork.shows"] > 1_000
    assert 0 < report["artwork.take_rate.logged"] < 0.2
    for policy in ("random", "popular", "bandit"):
        for kind in ("ips", "snips"):
            value, se = report[f"artwork.take_rate.{policy}.{kind}"], report[
                f"artwork.take_rate.{policy}.{kind}_se"]  # fmt: skip
            assert 0 <= value < 0.5 and 0 < se < value, (policy, kind)
    # without artworks in the catalog, no artwork key
    plain = evaluate(tmp_path / "events.jsonl", settings=Settings(), progress=False)
    assert not any(key.startswith("artwork.") for key in plain)


@pytest.fixture(scope="module")
def audience(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four weeks of 300 viewers (~60,000 records), and the catalog."""
    directory = tmp_path_factory.mktemp("audience")
    simulator = Simulator(SimulationConfig(users=300, days=28, seed=5))
    write_jsonl(simulator.records(), directory / "events.jsonl")
    write_catalog(simulator.catalog(), directory / "catalog.jsonl")
    return directory / "events.jsonl", directory / "catalog.jsonl"


@pytest.mark.slow
def test_shared_learning_gives_many_partitions_the_quality_of_one(
    audience: tuple[Path, Path], tmp_path: Path
) -> None:
    """At 32 partitions each learns from ~9 viewers; merged every 15 minutes, from all.

    Merged hourly the lists hit 3 % less often than one partition's on this small audience
    (0.439 against 0.454: fewer choices an hour to learn from, so the hour's lag counts).
    """
    events, catalog = audience

    def run(partitions: int, every_s: float = 0.0) -> dict[str, float | int]:
        return evaluate(
            events, settings=Settings(), catalog_path=catalog, partitions=partitions,
            share_every_s=every_s, progress=False,
        )  # fmt: skip

    one, alone, shared = run(1), run(32), run(32, 900.0)
    print(f"\n1 partition {one}\n32 alone {alone}\n32 shared {shared}")
    hits, auc, ece = "reco.hit_rate_at_10", "churn.published.auc", "churn.published.ece"
    assert shared["shared.merges"] >= 0.95 * 28 * 24 * 4 and alone["shared.merges"] == 0
    assert alone[hits] < 0.8 * one[hits]  # learning alone loses a fifth of the hits or more
    assert shared[hits] >= 0.97 * one[hits]
    assert abs(shared[auc] - one[auc]) <= 0.01 and shared[ece] <= one[ece] + 0.01
    # the champion scores with the Poisson hazard, which needs no labels, so alone it
    # is close to one partition's on this small audience; the inactivity model has no
    # such offset: alone it starts at an intercept of 0 and sees a 32nd of the labels
    silent_3d, silent_7d = "churn.inactive_3d.ece", "churn.inactive_7d.auc"
    assert shared[silent_3d] <= one[silent_3d] + 0.01 < 2 * one[silent_3d] < alone[silent_3d]
    assert shared[silent_7d] >= one[silent_7d] - 0.01 > alone[silent_7d] + 0.05
    with pytest.raises(SystemExit) as exited:
        main([
            "evaluate", str(events), "--catalog", str(catalog), "--partitions", "32",
            "--share-every-s", "900", "--report", str(tmp_path / "r.json"),
        ])  # fmt: skip
    assert exited.value.code == 0
    again = orjson.loads((tmp_path / "r.json").read_bytes())
    quality = {k: v for k, v in shared.items() if k != "events_per_s"}
    assert {k: again[k] for k in quality} == quality  # a replay gives the same scores
