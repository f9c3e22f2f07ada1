"""`pfrl bench NAME --json OUT`: every bench takes the flag, and the ones that can run tiny write
their figures and ratio there (the shared writer in pfrl/bench/report.py)."""

from __future__ import annotations

import json
import math

import pytest

from pfrl.bench.report import write_json
from pfrl.cli import build_parser, main
from pfrl.commands.bench import BENCHES

# The bare harness needs an interpreter the sandbox can run (as in test_sandbox).
TINY_SANDBOX = ["bench", "sandbox", "--programs", "2", "--tests", "2", "--workers", "1", "--backend", "none",
                "--set", "labeller.sandbox.python=/usr/bin/python3"]


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_every_bench_takes_json_out(bench, tmp_path):
    args = build_parser("bench").parse_args(["bench", bench, "--json", str(tmp_path / "o.json")])
    assert args.json_out == str(tmp_path / "o.json")


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_every_bench_takes_config_overrides_the_same_way(bench):
    args = build_parser("bench").parse_args(["bench", bench, "--set", "learner.lr=1e-5", "--set", "run.seed=3"])
    assert args.overrides == ["learner.lr=1e-5", "run.seed=3"]


def test_writer_adds_the_machine_and_writes_strict_json(tmp_path):
    out = tmp_path / "figures.json"
    write_json(out, "sync", {"zmq_vs_copy": 0.5, "broken": math.inf, "nested": [math.nan, 1]})
    record = json.loads(out.read_text())  # strict: NaN/inf would not parse in most readers
    assert record["bench"] == "sync" and record["zmq_vs_copy"] == 0.5
    assert record["broken"] is None and record["nested"] == [None, 1]
    assert record["cpus"] >= 1 and record["utc"].endswith("Z")
    assert not list(tmp_path.glob("*.tmp"))


def test_writer_without_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_json(None, "sync", {"x": 1})
    assert not list(tmp_path.iterdir())


def test_unwritable_out_stops_before_the_bench_runs(tmp_path, capsys):
    """A --json path in a missing directory is refused when parsed (exit 2), not after minutes of bench."""
    with pytest.raises(SystemExit) as stop:
        main([*TINY_SANDBOX, "--json", str(tmp_path / "missing-dir" / "o.json")])
    assert stop.value.code == 2 and "missing-dir" in capsys.readouterr().err.splitlines()[-1]


def test_sandbox_bench_writes_its_ratio(tmp_path):
    out = tmp_path / "sandbox.json"
    assert main([*TINY_SANDBOX, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["bench"] == "sandbox" and record["executions"] == 4
    assert record["sandbox_vs_bare"] > 0 and record["bare_passed"] == 4 and record["sandbox_passed"] == 4


def test_sync_bench_writes_zmq_vs_copy(tmp_path):
    out = tmp_path / "sync.json"
    assert main(["bench", "sync", "--size-mb", "1", "--repeats", "1", "--transports", "zmq,zmq_frames",
                 "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["bench"] == "sync" and 0 < record["zmq_vs_copy"] and 0 < record["zmq_frames_vs_copy"]
    assert record["copy_gb_per_s"] > 0 and record["zmq_ms"] > 0 and record["receivers"] == 1
    assert record["shm_ring"] is True and record["shm_slots"] == 4  # `zmq` went through the ring


def test_sync_bench_measures_each_bucket_size_in_one_run(tmp_path):
    out = tmp_path / "sync.json"
    assert main(["bench", "sync", "--size-mb", "1", "--repeats", "1", "--transports", "zmq",
                 "--bucket-mb", "0.5,0.25", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["by_bucket_mb"]) == {"0.5", "0.25"} and record["bucket_mb"] == 0.5
    assert record["zmq_vs_copy"] == record["by_bucket_mb"]["0.5"]["zmq_vs_copy"] > 0


def test_generate_bench_reports_how_natural_the_lengths_were():
    from types import SimpleNamespace

    from pfrl.bench.generate import _lengths

    groups = [SimpleNamespace(token_ids=[[1] * 5, [1] * 64], finish_reasons=["stop", "length"]),
              SimpleNamespace(token_ids=[[1] * 12], finish_reasons=["stop"])]
    assert _lengths(groups) == {"vllm_len_mean": 27.0, "vllm_len_min": 5, "vllm_len_p50": 12, "vllm_len_max": 64,
                                "vllm_eos_frac": 2 / 3}


def test_run_logged_returns_the_exit_code_or_kills_the_session_at_the_timeout(tmp_path):
    import sys
    import time

    from pfrl.bench.launch import TIMED_OUT, run_logged

    log = tmp_path / "run.log"
    assert run_logged([sys.executable, "-c", "print('hi'); raise SystemExit(3)"], log, 30) == 3
    assert log.read_text().strip() == "hi"
    start = time.monotonic()
    # a run that does not end is killed at the timeout (its whole session, as Ray's daemons would be)
    assert run_logged([sys.executable, "-c", "import time; time.sleep(60)"], log, 1.0) == TIMED_OUT
    assert time.monotonic() - start < 30
