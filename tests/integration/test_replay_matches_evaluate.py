"""``ottscore replay`` and ``ottscore evaluate`` read one file as the same records."""

from __future__ import annotations

from pathlib import Path

from conftest import free_ports
from worker_process import WorkerProcess, labelled, sum_samples

from agents.devtools.produce import produce
from pipeline.core.events import Event, encode_event
from pipeline.offline.evaluate import evaluate
from pipeline.serde.jsonl import read_jsonl_records


def test_a_file_with_empty_and_malformed_lines_gives_the_same_counts_live_and_offline(
    settings_factory, tmp_path: Path
) -> None:
    settings = settings_factory(metrics_port=free_ports(1)[0])
    lines = []
    for n in range(40):
        event = Event(f"e{n}", "search", f"u{n % 7}", 1_795_378_503_120 + n * 60_000, query="q")
        lines.append(encode_event(event))
        if n % 10 == 3:
            lines += [b"", b"   ", b"{oops", encode_event(event)]  # empty, blank, bad, a retry
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines[:20]) + b"\r\n" + b"\r\n".join(lines[20:]) + b"\n")

    report = evaluate(path, settings=settings, progress=False)
    sent = produce(settings, read_jsonl_records(path))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_received(sent)
        samples = worker.samples()
    finally:
        assert worker.stop() == 0

    assert sent == report["events"] == len(lines)
    rejected = labelled(samples, "ottscore_events_rejected_total", "reason")
    assert sum(rejected.values()) == report["dlq"] == 12
    assert rejected == {"empty": 4, "not_json": 8}
    assert sum_samples(samples, "ottscore_events_deduplicated_total") == 4
