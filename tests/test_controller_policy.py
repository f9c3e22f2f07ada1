"""The controller's issue/train decisions (staleness, lockstep, backpressure, iteration tail),
on a real Controller whose actors are not started."""

import pytest

from pfrl.config import load_config
from pfrl.controller import Controller, LearnerJob, Request
from pfrl.preflight import RunInputs
from pfrl.types import PreferencePair, Problem


def make(tmp_path, *overrides):
    cfg = load_config("configs/tiny-math.yaml", [f"run.dir={tmp_path}", "run.iterations=1",
                                                "data.prompts_per_iteration=8", "learner.pairs_per_step=4",
                                                "metrics.tensorboard=false", *overrides])
    problems = [Problem(id=f"p{i}", prompt=f"q{i}", answer="1") for i in range(8)]
    c = Controller(cfg, RunInputs("unused", problems, [], 0), resume=False)
    c.gen_versions = [0]
    return c


def buffer_pairs(c, n, version=0):
    """Issue n prompts and buffer one pair for each (as labelling them would)."""
    items = c.scheduler.next_items(n)
    for it in items:
        c.scheduler.buffered(it.problem.id, 1)
    c.buffer.add([PreferencePair(it.problem.id, it.problem.prompt, "good", "bad", version) for it in items],
                 c.counters.version)


def test_backpressure_target_scales_with_lag(tmp_path):
    c = make(tmp_path, "buffer.max_policy_lag=1")
    assert c._issue_allowed()
    buffer_pairs(c, 7)  # target is pairs_per_step * (lag + 1) = 8
    assert c._issue_allowed()
    buffer_pairs(c, 1)
    assert not c._issue_allowed()


def test_generators_too_far_behind_get_no_prompts(tmp_path):
    c = make(tmp_path, "buffer.max_policy_lag=1")
    c.counters.version = 2
    c.gen_versions = [0]
    assert not c._issue_allowed()
    c.gen_versions = [1]
    assert c._issue_allowed()


def test_lockstep_issues_nothing_while_learning_and_trains_only_complete_batches(tmp_path):
    c = make(tmp_path, "buffer.max_policy_lag=0")
    buffer_pairs(c, 4)
    c.requests = [Request(0, c.scheduler.next_items(1), gen_ref=None)]
    assert c._trainable_now() is None  # a rollout of this version is still out
    c.requests = []
    batch = c._trainable_now()
    assert len(batch) == 4
    c.job = LearnerJob(future=None, pairs=batch, started=0.0)
    assert not c._issue_allowed()


def test_iteration_tail_trains_a_partial_batch(tmp_path):
    c = make(tmp_path, "buffer.max_policy_lag=1")
    buffer_pairs(c, 3)
    assert c._trainable_now() is None  # more prompts to come: wait for a full batch
    for it in c.scheduler.next_items(8):
        c.scheduler.finish(it.problem.id)
    assert len(c._trainable_now()) == 3


def test_stale_pairs_settle_in_the_ledger(tmp_path):
    c = make(tmp_path, "buffer.max_policy_lag=0")
    buffer_pairs(c, 2)
    c.counters.version = 1
    assert c._trainable_now() is None
    c.ledger.flush()
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all('"stale"' in line for line in lines)


@pytest.mark.parametrize("lag", [0, 2])
def test_max_steps_stops_training(tmp_path, lag):
    c = make(tmp_path, f"buffer.max_policy_lag={lag}", "run.max_steps=1")
    buffer_pairs(c, 4)
    c.counters.step = 1
    assert c._trainable_now() is None and c._finished()
