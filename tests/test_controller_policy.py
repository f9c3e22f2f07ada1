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
    c.gen_versions, c.gen_instances = [0], ["g0-a"]
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


def _finished_job(c, result) -> LearnerJob:
    from concurrent.futures import Future

    future = Future()
    future.set_result(result)
    buffer_pairs(c, 4)
    return LearnerJob(future, c.buffer.take(4, c.counters.version), started=0.0)


def test_learner_work_hands_back_a_failed_sync_with_the_steps_metrics(tmp_path):
    from types import SimpleNamespace

    from pfrl.errors import SyncError

    c = make(tmp_path)
    c.fleet = SimpleNamespace(learner=SimpleNamespace(train_step=lambda pairs: {"learner/pairs": len(pairs)}),
                              generators=[object(), object()])

    def dead_generator(version, gens):
        raise SyncError("generator 1 did not answer prepare_sync")

    c._sync_now = dead_generator
    metrics, sync = c._learner_work(["a", "b"], sync_due=True)
    assert metrics == {"learner/pairs": 2} and isinstance(sync, SyncError)
    assert c._learner_work(["a"], sync_due=False) == ({"learner/pairs": 1}, None)


def test_failed_step_sync_keeps_the_step_and_resyncs_every_generator(tmp_path):
    """A generator killed during the step's weight sync: the step counts, the run waits for the
    restart, and every generator gets the new version before any prompt goes out."""
    from pfrl.errors import SyncError

    c = make(tmp_path, "buffer.max_policy_lag=1", "checkpoint.every_steps=100", "metrics.eval_every_steps=null")
    c.gen_versions, c.gen_instances = [0, 0], ["g0-a", "g1-a"]
    instances = ["g0-a", "g1-b"]  # generator 1 is a new instance: Ray restarted it
    calls = []

    def wait(g):
        calls.append(("wait", g, list(c.gen_versions)))
        return {"instance_id": instances[g], "version": 0}

    def sync_now(version, gens):
        calls.append(("sync", version, gens))
        c.gen_versions = [version] * 2  # as the real one records
        return {"version": version, "latency_ms": 1.0, "gbps": 1.0, "instances": instances}

    c._wait_for_restart, c._sync_now = wait, sync_now
    c.job = _finished_job(c, ({"learner/pairs": 4.0}, SyncError("generator 1 did not answer prepare_sync")))
    c._reap_learner()
    assert (c.counters.step, c.counters.version) == (1, 1)
    # blanked while waiting (no prompts can go out), then synced together to the new version
    assert calls == [("wait", 0, [-1, -1]), ("wait", 1, [-1, -1]), ("sync", 1, [0, 1])]
    assert c.counters.generator_restarts == 1 and c._issue_allowed()
    # The dead instance's request fails later: its prompts go out again, but the restart is not
    # counted twice and the generator, already on the current weights, is not synced again.
    calls.clear()
    c._wait_for_restart = lambda g: {"instance_id": instances[g], "version": 1}
    c._generator_died(1, RuntimeError("actor died"))
    assert calls == [] and c.counters.generator_restarts == 1


def test_restart_seen_only_by_a_sync_is_counted(tmp_path):
    """Killed while it had no request out, a generator restarts unnoticed until the next sync
    reaches a new instance: that sync counts the restart (the new weights already reached it)."""
    c = make(tmp_path)
    c.gen_versions, c.gen_instances = [0, 0], ["g0-a", "g1-a"]
    c.fleet = type("F", (), {"generators": [object(), object()]})()
    c._sync_now = lambda version, gens: {"version": version, "latency_ms": 1.0, "gbps": 1.0,
                                         "instances": ["g0-a", "g1-b"]}
    c._sync([0, 1])
    assert c.counters.generator_restarts == 1 and c.gen_instances == ["g0-a", "g1-b"]
    c._sync([0, 1])
    assert c.counters.generator_restarts == 1


def test_dead_generator_is_resynced_after_its_restart(tmp_path):
    c = make(tmp_path, "buffer.max_policy_lag=1")
    c.counters.version, c.gen_versions = 3, [3]
    items = c.scheduler.next_items(2)
    c.requests = [Request(0, items, gen_ref=None, issued_version=3)]
    synced = []
    c._wait_for_restart = lambda g: {"instance_id": "g0-b", "version": 0}
    c._sync = lambda gens: synced.append((gens, list(c.gen_versions)))
    c._generator_died(0, RuntimeError("actor died"))
    assert synced == [([0], [-1])]  # blank until it has the current weights
    assert c.requests == [] and c.counters.generator_restarts == 1
    assert [it.problem.id for it in c.scheduler.next_items(2)] == [it.problem.id for it in items]  # re-issued


def test_sync_failing_again_after_recovery_ends_the_run(tmp_path):
    from pfrl.controller import RunFailed
    from pfrl.errors import SyncError

    c = make(tmp_path, "checkpoint.every_steps=100", "metrics.eval_every_steps=null")
    c._wait_for_restart = lambda g: {"instance_id": "g0-a", "version": 0}

    def broken(version, gens):
        raise SyncError("receiver timed out")

    c._sync_now = broken
    c.job = _finished_job(c, ({"learner/pairs": 4.0}, SyncError("receiver timed out")))
    with pytest.raises(RunFailed, match="weight sync of version 1 to generators \\[0\\] failed"):
        c._reap_learner()


def test_evaluation_survives_generator_0_dying_once_but_not_twice(tmp_path):
    from ray.exceptions import ActorDiedError

    from pfrl.controller import RunFailed

    c = make(tmp_path)
    died, outcomes = [], [ActorDiedError(), {"eval/accuracy": 0.5}]

    def evaluate_once(step):
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    c._evaluate_once = evaluate_once
    c._generator_died = lambda g, err: died.append(g)
    assert c._evaluate(4) == {"eval/accuracy": 0.5} and died == [0]
    outcomes[:] = [ActorDiedError(), ActorDiedError()]
    with pytest.raises(RunFailed, match="died twice during the evaluation at step 4"):
        c._evaluate(4)


def test_older_weights_in_a_result_mean_a_restart_counted_once_and_resynced(tmp_path):
    c = make(tmp_path)
    c.counters.version, c.gen_versions = 3, [3]
    synced = []
    c._sync = lambda gens: synced.append(gens)
    c._wait_for_restart = lambda g: {"instance_id": "g0-b", "version": 0}
    c._generator_restarted(0)
    assert synced == [[0]] and c.counters.generator_restarts == 1
    # a second old result from the same restart: the instance is known and, once synced, current
    c.gen_versions = [3]
    c._wait_for_restart = lambda g: {"instance_id": "g0-b", "version": 3}
    c._generator_restarted(0)
    assert synced == [[0]] and c.counters.generator_restarts == 1
