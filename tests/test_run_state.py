"""Scheduler, ledger, checkpoint store and metrics sinks: the stateful parts of a run, on CPU."""

import json

import pytest

from pfrl.checkpoint import CheckpointStore, CheckpointWriteError
from pfrl.config import PfrlConfig, load_config
from pfrl.errors import RunFailed, UserError
from pfrl.ledger import Ledger, LedgerLine, audit, read_ledger
from pfrl.metrics import JsonlSink, RateMeter, read_metrics
from pfrl.scheduler import PromptScheduler, make_splits
from pfrl.types import Problem


def problems(n):
    return [Problem(id=f"p{i}", prompt=f"q{i}") for i in range(n)]


def test_splits_are_disjoint_seeded_and_checked():
    ids = [f"p{i}" for i in range(10)]
    splits = make_splits(ids, 3, 3, seed=1, shuffle=True)
    flat = [x for s in splits for x in s]
    assert len(flat) == len(set(flat)) == 9
    assert splits == make_splits(ids, 3, 3, seed=1, shuffle=True) != make_splits(ids, 3, 3, seed=2, shuffle=True)
    with pytest.raises(UserError, match="cannot give 3 disjoint splits of 4"):
        make_splits(ids, 3, 4, seed=1, shuffle=True)


def test_scheduler_lifecycle_and_reissue():
    sched = PromptScheduler(problems(4), [["p0", "p1", "p2"], ["p3"]])
    items = sched.next_items(2)
    assert [i.problem.id for i in items] == ["p0", "p1"]
    sched.reissue(["p1"])
    again = sched.next_items(2)
    assert [(i.problem.id, i.attempt) for i in again] == [("p1", 1), ("p2", 0)]
    assert not sched.is_current(items[1]) and sched.is_current(again[0])  # the old attempt is ignored
    sched.finish("p0")
    sched.buffered("p1", 2)
    assert sched.settle_pair("p1", trained=True) is None
    entry = sched.settle_pair("p1", trained=False)
    assert entry.pairs_trained == 1
    assert not sched.iteration_done()
    sched.finish("p2")
    assert sched.iteration_done() and sched.advance_iteration() and sched.split == ["p3"]
    assert not sched.advance_iteration()


def test_scheduler_state_reissues_inflight_but_keeps_buffered():
    sched = PromptScheduler(problems(3), [["p0", "p1", "p2"]])
    sched.next_items(3)
    sched.buffered("p0", 1)
    clone = PromptScheduler(problems(3), [["p0", "p1", "p2"]])
    clone.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    assert [(i.problem.id, i.attempt) for i in clone.next_items(5)] == [("p1", 1), ("p2", 1)]
    assert clone.pending["p0"].stage == "buffered"


def test_ledger_truncate_rolls_back_and_audit_finds_gaps(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for i in range(3):
        ledger.record(LedgerLine(0, f"p{i}", "trained", 1, i))
    ledger.flush()
    ledger.record(LedgerLine(0, "p2", "stale", 0, 3))
    assert ledger.truncate(3) == 1
    ledger.record(LedgerLine(0, "p3", "no_pair", 0, 3))
    ledger.close()
    lines = read_ledger(tmp_path / "ledger.jsonl")
    report = audit(lines, {0: ["p0", "p1", "p2", "p3", "p4"]})[0]
    assert report["missing"] == ["p4"] and report["repeated"] == []
    assert report["outcomes"] == {"trained": 3, "no_pair": 1}
    with pytest.raises(ValueError):
        Ledger(tmp_path / "x.jsonl").record(LedgerLine(0, "p", "lost", 0, 0))


def _save(store, step, cfg, marker="w"):
    return store.save(step, {"step": step}, {"pairs": []}, cfg, lambda d: (d.mkdir(), (d / "weights").write_text(marker)))


def test_checkpoint_atomic_latest_and_keep_last(tmp_path):
    cfg = PfrlConfig()
    store = CheckpointStore(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        _save(store, step, cfg)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-000002", "step-000003"]
    path, controller, buffer_state = store.load(cfg)
    assert path.name == "step-000003" and controller == {"step": 3} and buffer_state == {"pairs": []}


def test_checkpoint_crash_mid_write_keeps_previous(tmp_path):
    cfg = PfrlConfig()
    store = CheckpointStore(tmp_path, keep_last=2)
    _save(store, 1, cfg)

    def crash(_d):
        raise OSError("disk full")

    with pytest.raises(CheckpointWriteError, match="disk full"):
        store.save(2, {"step": 2}, {}, cfg, crash)
    path, controller, _ = store.load(cfg)
    assert path.name == "step-000001" and controller == {"step": 1}


def test_checkpoint_validation_errors(tmp_path):
    cfg = PfrlConfig()
    store = CheckpointStore(tmp_path, keep_last=2)
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        store.load(cfg)
    path = _save(store, 1, cfg)
    changed = load_config(None, ["run.seed=7"])
    with pytest.raises(UserError, match="run.seed changed from 0 to 7"):
        store.load(changed)
    (path / "buffer.msgpack").unlink()
    with pytest.raises(UserError, match="incomplete checkpoint, missing buffer.msgpack"):
        store.load(cfg)


def test_metrics_jsonl_truncate_and_read(tmp_path):
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        sink.write({"step": step})
    sink.truncate(2)
    sink.write({"step": 3})
    sink.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_rate_meter_window():
    meter = RateMeter(window_s=10)
    meter.add(100, now=0.0)
    meter.add(100, now=5.0)
    assert meter.rate(now=10.0) == pytest.approx(20.0)
    assert meter.rate(now=14.0) == pytest.approx(100 / 9)  # the first event left the window
    assert meter.rate(now=16.0) == 0.0


def test_status_reads_step_figures_past_the_final_eval_line(tmp_path):
    """The run's last line is often the closing evaluation, which has no throughput or buffer
    figures: status must take those from the step lines, not report None or average in zeros."""
    from pfrl.commands.status import summarize

    def step(n, tps, stale):
        return {"step": n, "iteration": 0, "policy_version": n, "time": 100.0 + n, "learner/step_s": 1.0,
                "gen/tokens_per_s": tps, "buffer/policy_lag": 1, "buffer/dropped_stale": stale}

    lines = [{"step": 0, "eval/accuracy": 0.5, "time": 99.0}, step(1, 1000.0, 0), step(2, 2000.0, 3),
             {"step": 2, "iteration": 0, "policy_version": 2, "eval/accuracy": 0.7, "time": 103.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = summarize(tmp_path, recent=10)
    assert (summary["step"], summary["policy_lag"], summary["dropped_stale"]) == (2, 1, 3)
    assert summary["recent"]["gen/tokens_per_s"] == 1500.0 and "sync/ms" not in summary["recent"]
    assert summary["first_eval"] == {"step": 0, "accuracy": 0.5}
    assert summary["last_eval"] == {"step": 2, "accuracy": 0.7}


def test_wandb_resume_continues_the_same_run(tmp_path, monkeypatch):
    """wandb.init(resume="allow") without an id starts a new run on every resume: the id is kept
    in RUN_DIR and passed back."""
    import sys
    import types

    from pfrl.metrics import WandbSink

    inits, ids = [], iter(["abc123", "zzz999"])
    fake = types.ModuleType("wandb")
    fake.util = types.SimpleNamespace(generate_id=lambda: next(ids))
    fake.init = lambda **kw: inits.append(kw) or types.SimpleNamespace(log=lambda *a, **k: None, finish=lambda: None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    WandbSink("proj", tmp_path, {}).close()
    WandbSink("proj", tmp_path, {}).close()  # the resumed run
    assert [kw["id"] for kw in inits] == ["abc123", "abc123"]
    assert all(kw["resume"] == "allow" and kw["project"] == "proj" for kw in inits)


@pytest.mark.parametrize("error, code", [(RunFailed("learner died"), 1), (ValueError("a bug"), None)])
def test_a_failing_run_records_failed_whatever_the_error(tmp_path, monkeypatch, error, code):
    """RunFailed ends with exit 1 and the resume hint; any other error still propagates (a bug's
    traceback) but state.json must not keep saying "running"."""
    from pfrl import training

    class Session:
        def __init__(self, cfg, inputs, resume):
            self.run_dir = tmp_path
            self.state = type("S", (), {"counters": type("C", (), {"step": 3})()})()
            self.store = CheckpointStore(tmp_path, 2)
            self.closed = False

        def start(self):
            raise error

        def shutdown(self):
            type(self).closed = True

    monkeypatch.setattr(training, "check_inputs", lambda cfg: None)
    monkeypatch.setattr(training, "RunSession", Session)
    cfg = load_config(None, [f"run.dir={tmp_path}"])
    if code is None:
        with pytest.raises(ValueError):
            training.train(cfg)
    else:
        assert training.train(cfg) == code
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["state"] == "failed" and state["step"] == 3 and str(error) in state["detail"]
    assert Session.closed
