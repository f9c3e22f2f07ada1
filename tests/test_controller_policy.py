"""The loop's decisions and its fault handling, without actors.

The issue/train rules are pure functions of a snapshot (pfrl/issue_policy.py). The fault paths run
on a real Controller and RunState handed actor-facing parts (generator pool health, learner thread,
rollout requests) that are small fakes recording what the controller asked of them."""

import time
from dataclasses import replace

import pytest

from pfrl import issue_policy
from pfrl.checkpoint import CheckpointStore
from pfrl.config import load_config
from pfrl.controller import Controller, RunFailed
from pfrl.errors import SyncError
from pfrl.generator_pool import GeneratorPool, GenStatus
from pfrl.issue_policy import LoopSnapshot
from pfrl.learner_thread import LearnerThread, StepResult
from pfrl.preflight import RunInputs
from pfrl.rollouts import GeneratorLost
from pfrl.run_state import RunState
from pfrl.types import PreferencePair, Problem

SNAP = LoopSnapshot(max_policy_lag=1, pairs_per_step=4, capacity=64, num_learners=1, buffered=0,
                    inflight_prompts=0, unissued_prompts=8, pairs_per_prompt=1.0, learner_busy=False,
                    stopping=False, steps_done=0, max_steps=None)


# -- the pure rules ------------------------------------------------------------------------
def test_backpressure_target_scales_with_lag():
    assert issue_policy.prompt_deficit(SNAP) == 8  # pairs_per_step * (lag + 1)
    assert issue_policy.prompt_deficit(replace(SNAP, buffered=7)) == 1
    assert issue_policy.prompt_deficit(replace(SNAP, buffered=4, inflight_prompts=4)) == 0
    assert issue_policy.prompt_deficit(replace(SNAP, max_policy_lag=3)) == 16
    assert issue_policy.prompt_deficit(replace(SNAP, pairs_per_prompt=2.0)) == 4  # fewer prompts per pair
    assert issue_policy.prompt_deficit(replace(SNAP, stopping=True)) == 0


@pytest.mark.parametrize(("lag", "every", "done", "busy", "steps"), [
    (1, 1, 0, False, 2),  # the step about to start and the next
    (1, 1, 0, True, 1),  # the step in flight took its pairs; only the next can train these
    (0, 1, 3, False, 1), (0, 1, 3, True, 0),  # lockstep: nothing while the policy changes
    (2, 1, 3, True, 2),
    (2, 5, 3, False, 2), (2, 5, 3, True, 1), (2, 5, 4, True, 0),  # sparse: stale at the sync after step 5
    (3, 2, 0, False, 4),  # survives one sync of two steps, not the second
])
def test_trainable_steps_follow_the_lag_and_the_syncs(lag, every, done, busy, steps):
    snap = replace(SNAP, max_policy_lag=lag, sync_every_steps=every, steps_done=done, learner_busy=busy)
    assert issue_policy.trainable_steps(snap) == steps


def test_while_learning_only_the_next_step_is_filled():
    """bench e2e run 8: 32 pairs a step, 2 pairs a prompt, lag 1. The old target, two steps'
    pairs at all times, kept 32 prompts out while the learner trained; the second step's worth
    came back two versions old and was dropped (a quarter of the pairs)."""
    e2e = replace(SNAP, pairs_per_step=32, capacity=256, unissued_prompts=640, pairs_per_prompt=2.0)
    assert issue_policy.prompt_deficit(e2e) == 32  # waiting: this step and the next
    assert issue_policy.prompt_deficit(replace(e2e, learner_busy=True)) == 16  # training: the next only
    assert issue_policy.prompt_deficit(replace(e2e, learner_busy=True, inflight_prompts=16)) == 0


def test_pairs_the_coming_sync_makes_stale_do_not_count_as_buffered():
    e2e = replace(SNAP, pairs_per_step=32, capacity=256, unissued_prompts=640, pairs_per_prompt=2.0)
    busy = replace(e2e, learner_busy=True, buffered=30, expiring=24)
    assert issue_policy.prompt_deficit(busy) == 13  # 32 - (30 - 24) pairs at 2 a prompt
    assert issue_policy.prompt_deficit(replace(busy, learner_busy=False)) == 17  # waiting: all 30 count


def test_prompts_in_flight_cover_the_need_by_the_yields_spread():
    """Aimed below the mean (so that the surplus was rarely dropped stale), most steps waited on a
    top-up request for their last pairs; the surplus now goes back to be sampled (`wants_group`)."""
    busy = replace(SNAP, pairs_per_step=32, capacity=256, unissued_prompts=640, pairs_per_prompt=2.0,
                   pairs_per_prompt_sd=1.4, learner_busy=True)
    # m * 2 - 1.4 * sqrt(m) >= 32: m = 20 (33.7 pairs at one sd below the mean; 19 gives 31.9)
    assert issue_policy.prompt_deficit(busy) == 20
    assert issue_policy.prompt_deficit(replace(busy, inflight_prompts=20)) == 0  # wait for their labels
    # labelled: 27 pairs in, 5 short; 4 prompts cover it at one sd (8 - 2.8 >= 5), 3 do not
    assert issue_policy.prompt_deficit(replace(busy, buffered=27)) == 4
    assert issue_policy.prompt_deficit(replace(busy, buffered=31)) == 2
    assert issue_policy.prompt_deficit(replace(busy, buffered=32)) == 0
    # waiting: the same bound over the two steps' 64 pairs...
    assert issue_policy.prompt_deficit(replace(busy, learner_busy=False)) == 37
    # ...but the first request carries what the waiting step lacks, at the mean
    assert issue_policy.request_prompts(replace(busy, learner_busy=False, buffered=24), 8) == 4
    lockstep = replace(busy, max_policy_lag=0, learner_busy=False)
    assert issue_policy.prompt_deficit(lockstep) == 16  # a whole round at the mean
    assert issue_policy.prompt_deficit(replace(busy, pairs_per_prompt_sd=0.0)) == 16  # no spread: the mean
    # labellers behind (the code preset's sandbox): one sd below, m * 2 + 1.4 * sqrt(m) >= 32
    assert issue_policy.prompt_deficit(replace(busy, labels_behind=True)) == 14


def test_labels_are_behind_when_a_sampled_request_waits_for_them(tmp_path):
    from pfrl.rollouts import Request, RolloutRequests

    rollouts = RolloutRequests([], [])
    assert rollouts.labelling_wait() == 0.0
    rollouts.requests = [Request(0, [], None), Request(0, [], None, sampled_at=time.time() - 1.0)]
    assert 1.0 <= rollouts.labelling_wait() < 2.0  # the sampled one; the other is still sampling
    rollouts.requests = []
    rollouts._label_waits.extend([3.0, 1.0])  # the queue is empty now, but labels took 2 s lately
    assert rollouts.labelling_wait() == 2.0
    c = make(tmp_path)
    c.rollouts.wait = 1.0
    assert c._snapshot().labels_behind
    c.rollouts.wait = 0.01
    assert not c._snapshot().labels_behind


def test_prompts_no_step_can_train_are_not_counted_as_coming_pairs(tmp_path):
    """Run 29: a step started while the last version's surplus was still sampling; counted as
    pairs for the next step, they left it short, and it waited a whole round (0.8-1.0 s)."""
    busy = replace(SNAP, pairs_per_step=32, capacity=256, unissued_prompts=640, pairs_per_prompt=2.0,
                   learner_busy=True)
    assert issue_policy.doomed_prompts(busy, {0: 8, 1: 12}) == 12  # one version old: stale at the sync
    assert issue_policy.doomed_prompts(replace(busy, learner_busy=False), {0: 8, 1: 12}) == 0  # the next step
    assert issue_policy.prompt_deficit(replace(busy, inflight_prompts=20)) == 0
    assert issue_policy.prompt_deficit(replace(busy, inflight_prompts=20, doomed_prompts=12)) == 8
    c = make(tmp_path)
    c.state._pair_counts.append(1)
    c.rollouts.issue(0, c.state.scheduler.next_items(3), 0)
    c.state.counters.published = c.state.counters.version = c.state.counters.step = 1
    c.learner.job = "a step in flight"
    assert (c._snapshot().inflight_prompts, c._snapshot().doomed_prompts) == (3, 3)


def test_a_group_no_step_can_use_is_sampled_again():
    e2e = replace(SNAP, pairs_per_step=32, capacity=256, unissued_prompts=640, pairs_per_prompt=2.0)
    busy = replace(e2e, learner_busy=True)
    assert issue_policy.wants_group(busy, 0, as_fresh=31)
    assert not issue_policy.wants_group(busy, 0, as_fresh=32)  # the next step is covered
    assert issue_policy.wants_group(replace(busy, learner_busy=False), 0, as_fresh=32)  # this step and the next
    assert not issue_policy.wants_group(busy, 1, as_fresh=0)  # stale at the sync of the step in flight
    assert issue_policy.wants_group(replace(busy, learner_busy=False), 1, as_fresh=31)  # the waiting step takes it
    assert not issue_policy.wants_group(e2e, 2, as_fresh=0)  # beyond the lag
    lockstep = replace(e2e, max_policy_lag=0)
    assert issue_policy.wants_group(lockstep, 0, as_fresh=31)
    assert not issue_policy.wants_group(lockstep, 0, as_fresh=32)  # the round is complete


def test_a_waiting_learner_gets_a_request_of_only_the_prompts_its_step_lacks():
    e2e = replace(SNAP, pairs_per_step=32, capacity=256, unissued_prompts=640, pairs_per_prompt=2.0)
    assert issue_policy.request_prompts(replace(e2e, buffered=28), 8) == 2  # 4 pairs short: 2 prompts, not 8
    assert issue_policy.request_prompts(replace(e2e, buffered=28, inflight_prompts=2), 8) == 8  # then the rest
    assert issue_policy.request_prompts(e2e, 8) == 8  # never more than a request
    lag2 = replace(e2e, max_policy_lag=2, buffered=28)
    assert issue_policy.request_prompts(replace(lag2, learner_busy=True), 8) == 8  # filling later steps: full
    assert issue_policy.request_prompts(replace(e2e, stopping=True, buffered=28), 8) == 0


def test_before_the_first_labels_one_request_per_generator():
    """The code preset yields about 2.75 pairs a prompt; guessed at 1, its first 64 prompts
    brought 176 pairs for two steps and 134 were dropped as stale."""
    code = replace(SNAP, pairs_per_step=32, capacity=256, unissued_prompts=256, yield_known=False, num_generators=2)
    assert issue_policy.request_prompts(code, 16) == 16
    assert issue_policy.request_prompts(replace(code, inflight_prompts=16), 16) == 16  # the second generator's
    assert issue_policy.request_prompts(replace(code, inflight_prompts=32), 16) == 0  # then wait for labels
    assert issue_policy.request_prompts(replace(code, stopping=True), 16) == 0
    # never more than the deficit at the guessed yield: 2 pairs a step in lockstep is 2 prompts
    assert issue_policy.request_prompts(replace(code, pairs_per_step=2, max_policy_lag=0), 16) == 2
    assert issue_policy.request_prompts(replace(code, inflight_prompts=32, yield_known=True), 16) == 16


def test_lockstep_issues_nothing_while_learning_and_trains_only_complete_batches():
    lock = replace(SNAP, max_policy_lag=0, buffered=4)
    assert issue_policy.pairs_to_train(replace(lock, inflight_prompts=1)) == 0  # a rollout of this version is out
    assert issue_policy.pairs_to_train(lock) == 4
    assert issue_policy.prompt_deficit(replace(lock, buffered=0, learner_busy=True)) == 0
    assert issue_policy.prompt_deficit(replace(lock, buffered=0, sync_every_steps=2)) == 4  # one step, sparse or not
    assert issue_policy.prompt_deficit(replace(SNAP, learner_busy=True)) > 0  # online: sampling overlaps


def test_iteration_tail_trains_a_partial_batch():
    assert issue_policy.pairs_to_train(replace(SNAP, buffered=3)) == 0  # more to come: wait for a full batch
    assert issue_policy.pairs_to_train(replace(SNAP, buffered=3, unissued_prompts=0)) == 3
    two_ranks = replace(SNAP, buffered=1, unissued_prompts=0, num_learners=2)
    assert issue_policy.pairs_to_train(two_ranks) == 0  # a rank would get no pair


@pytest.mark.parametrize("lag", [0, 2])
def test_max_steps_stops_training(lag):
    assert issue_policy.pairs_to_train(replace(SNAP, max_policy_lag=lag, buffered=4, steps_done=1, max_steps=1)) == 0


def test_steps_left_estimates_the_iteration_from_the_pair_yield():
    # 8 unissued prompts at 3 pairs each + 4 buffered = 28 pairs = 7 steps of 4
    assert issue_policy.steps_left(replace(SNAP, buffered=4, pairs_per_prompt=3.0)) == 7
    assert issue_policy.steps_left(replace(SNAP, buffered=4, pairs_per_prompt=3.0, steps_done=5, max_steps=7)) == 2
    assert issue_policy.steps_left(replace(SNAP, unissued_prompts=0)) == 1  # never 0: this step counts


# -- a controller with fake actors ---------------------------------------------------------
class FakeLearnerThread:
    """Records syncs; `instances` are what each generator's prepare_sync answers."""

    def __init__(self, instances, fail=0):
        self.instances, self.fail, self.calls, self.job = instances, fail, [], None

    @property
    def busy(self):
        return self.job is not None

    def sync(self, gens, version):
        self.calls.append(("sync", version, gens))
        if self.fail:
            self.fail -= 1
            raise SyncError("receiver timed out")
        return {"version": version, "latency_ms": 1.0, "gbps": 1.0, "instances": [self.instances[g] for g in gens]}

    def wait(self):
        job, self.job = self.job, None
        return job

    def finished(self):
        return self.wait()


class FakePool(GeneratorPool):
    """A real pool whose Ray health calls answer from `health`."""

    def __init__(self, instances, calls):
        super().__init__([object()] * len(instances), list(instances))
        self.health, self.calls = {}, calls

    def wait_for_restart(self, g, timeout_s):
        self.calls.append(("wait", g, [s.status.value for s in self.states]))
        return self.health[g]


class FakeRollouts:
    def __init__(self):
        self.requests, self.issued, self.versions, self.wait = [], [], [], 0.0

    def labelling_wait(self):
        return self.wait

    def inflight_by_version(self):
        out = {}
        for version, items in self.versions:
            out[version] = out.get(version, 0) + len(items)
        return out

    def inflight_prompts(self):
        return sum(len(items) for _, items in self.issued)

    def sampling_prompts(self, g):
        return sum(len(items) for gg, items in self.issued if gg == g)

    def issue(self, g, items, version):
        self.issued.append((g, items))
        self.versions.append((version, items))

    def drop_generator(self, g):
        return []


def make(tmp_path, *overrides, gens=("g0-a",)):
    cfg = load_config("configs/tiny-math.yaml", [f"run.dir={tmp_path}", "run.iterations=1",
                                                "data.prompts_per_iteration=8", "learner.pairs_per_step=4",
                                                "metrics.tensorboard=false", "checkpoint.every_steps=100",
                                                "metrics.eval_every_steps=null", *overrides])
    problems = [Problem(id=f"p{i}", prompt=f"q{i}", answer="1") for i in range(8)]
    inputs = RunInputs("unused", problems, [], 0)
    learner = FakeLearnerThread(list(gens))
    state = RunState(cfg, inputs, tmp_path)
    return Controller(cfg, inputs, state, CheckpointStore(tmp_path, 1), learner_group=None,
                      pool=FakePool(gens, learner.calls), rollouts=FakeRollouts(), learner=learner)


def buffer_pairs(c, n, version=0):
    """Issue n prompts and buffer one pair for each (as labelling them would)."""
    items = c.state.scheduler.next_items(n)
    for it in items:
        c.state.scheduler.buffered(it.problem.id, 1)
    pairs = [PreferencePair(it.problem.id, it.problem.prompt, "good", "bad", version) for it in items]
    c.state.buffer.add(pairs, c.state.counters.published)
    return pairs


def finished_step(c, sync):
    buffer_pairs(c, 4)
    return StepResult(c.state.take(4), {"learner/pairs": 4.0}, 0.0, sync)


def test_blank_generators_get_no_prompts(tmp_path):
    c = make(tmp_path, gens=("g0-a", "g1-a"))
    c.pool.blank(0)
    c._issue_prompts()
    assert {g for g, _ in c.rollouts.issued} == {1}


def test_requests_go_to_the_least_loaded_generator_while_its_engine_has_room(tmp_path):
    # 2 generators, 2 prompts a request, room for 4 prompts each (max(2 x 2, 16 seqs / 8 samples));
    # the policy wants every prompt (yield 1 pair per prompt, 4 pairs a step, lag 1: 8 prompts).
    c = make(tmp_path, "generator.prompts_per_request=2", "generator.max_num_seqs=16",
             "generator.num_generators=2", gens=("g0-a", "g1-a"))
    c.state._pair_counts.append(1)  # the yield is known: past the one-request-per-generator start
    c._issue_prompts()
    assert [g for g, _ in c.rollouts.issued] == [0, 1, 0, 1]
    assert [c.rollouts.sampling_prompts(g) for g in (0, 1)] == [4, 4]


def test_engine_room_is_what_the_engine_batches_and_at_least_two_requests():
    assert issue_policy.engine_room(8, 256, 8) == 32
    assert issue_policy.engine_room(8, 64, 8) == 16  # two requests of 8: one runs, one waits
    assert issue_policy.engine_room(4, 64, 0) == 64


def test_sparse_syncs_keep_pairs_trainable_until_the_next_publication(tmp_path):
    """sync.every_steps 5 with lag 2: at learner version 3 the generators still serve version 0.
    Measured against the learner the pairs were stale and nothing could ever train again (no
    step, so no sync): measured against the published weights they train."""
    c = make(tmp_path, "sync.every_steps=5", "buffer.max_policy_lag=2")
    c.state.counters.version = c.state.counters.step = 3
    buffer_pairs(c, 4, version=0)
    c.state.drop_stale()
    assert len(c.state.buffer) == 4
    assert issue_policy.pairs_to_train(c._snapshot()) == 4
    c._issue_prompts()
    assert c.rollouts.issued, "generators on the published weights must keep sampling"
    c.state.counters.published = 5  # a publication makes the old pairs stale as the bound says
    c.state.drop_stale()
    assert len(c.state.buffer) == 0


def test_snapshot_counts_pairs_the_step_in_flight_makes_stale(tmp_path):
    c = make(tmp_path, "buffer.max_policy_lag=1")
    c.state.counters.version = c.state.counters.published = 3
    buffer_pairs(c, 2, version=2)  # trainable by the step in flight only
    buffer_pairs(c, 3, version=3)
    assert c.state.snapshot(0, learner_busy=True, stopping=False).expiring == 2
    assert c.state.snapshot(0, learner_busy=False, stopping=False).expiring == 0
    sparse = make(tmp_path / "sparse", "buffer.max_policy_lag=1", "sync.every_steps=2")
    buffer_pairs(sparse, 2, version=0)
    assert sparse.state.snapshot(0, learner_busy=True, stopping=False).expiring == 0  # step 1 publishes nothing


def test_pair_yield_leaves_out_duplicates_the_buffer_refuses(tmp_path):
    from pfrl.types import LabelledGroup, RolloutGroup

    c = make(tmp_path)
    item = c.state.scheduler.next_items(1)[0]
    pid = item.problem.id
    group = RolloutGroup(item, ["a", "a", "b"], [[1], [1], [2]], ["stop"] * 3, 1, 3, 0)
    result = LabelledGroup(pid, 0, 0, "1", [1.0, 1.0, 0.0], [(0, 2), (1, 2)])
    same = [PreferencePair(pid, item.problem.prompt, "a", "b", 0)] * 2  # two samples, one pair
    c.state.account(group, result, same)
    assert c.state.pairs_per_prompt == 1.0 and len(c.state.buffer) == 1


def test_a_surplus_group_goes_back_to_be_sampled_again(tmp_path):
    """A step trains (its pairs taken) and the next one's 4 pairs are buffered: a group of the
    published version can only feed steps that are covered, so its prompt is re-issued instead of
    its pairs being buffered and dropped stale after the next step."""
    from pfrl.rollouts import Labelled
    from pfrl.types import LabelledGroup, RolloutGroup

    c = make(tmp_path, "buffer.max_policy_lag=1")
    buffer_pairs(c, 4)
    c.learner.job = "a step in flight"
    item = c.state.scheduler.next_items(1)[0]
    group = RolloutGroup(item, ["a", "b", "c"], [[1], [2], [3]], ["stop"] * 3, 1, 3, 0)
    result = LabelledGroup(item.problem.id, 0, 0, "1", [1.0, 0.0, 0.0], [(0, 1), (0, 2)])
    c.intake.on_labelled(Labelled(None, [group], [result]))
    assert len(c.state.buffer) == 4 and c.state.meters.resampled == 1
    assert c.state.pairs_per_prompt == 2.0  # its yield still counts
    again = c.state.scheduler.next_items(1)[0]
    assert (again.problem.id, again.attempt) == (item.problem.id, 1)
    c.learner.job = None  # the learner waits: this step and the next can use the group's pairs
    group.item, result.prompt_id = again, again.problem.id
    c.intake.on_labelled(Labelled(None, [group], [result]))
    assert len(c.state.buffer) == 6 and c.state.meters.resampled == 1


def test_stale_pairs_settle_in_the_ledger(tmp_path):
    c = make(tmp_path, "buffer.max_policy_lag=0")
    buffer_pairs(c, 2)
    c.state.counters.published = 1
    c.state.drop_stale()
    c.state.ledger.flush()
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all('"stale"' in line and '"reason": "stale"' in line for line in lines)


def test_a_group_without_pairs_is_a_no_pair_line_with_its_reason(tmp_path):
    from pfrl.types import LabelledGroup, RolloutGroup

    c = make(tmp_path)
    item = c.state.scheduler.next_items(1)[0]
    group = RolloutGroup(item, ["a", "b"], [[1], [2]], ["stop", "stop"], 1, 2, 0)
    result = LabelledGroup(item.problem.id, 0, 0, None, [1.0, 1.0], [], skipped="all samples agree")
    c.state.account(group, result, [])
    c.state.ledger.flush()
    line = (tmp_path / "ledger.jsonl").read_text()
    assert '"outcome": "no_pair"' in line and '"reason": "all samples agree"' in line


def test_learner_thread_hands_back_a_failed_sync_with_the_steps_metrics():
    class Learner:
        rank0 = None

        def train_step(self, pairs, lr):
            return {"learner/pairs": len(pairs), "learner/lr": lr}

    thread = LearnerThread(Learner(), [object(), object()], sync_cfg=None, run_dir=None)

    def dead_generator(gens, version):
        raise SyncError("generator 1 did not answer prepare_sync")

    thread._publish = dead_generator
    try:
        thread.start_step(["a", "b"], 0.5, publish_as=1)
        result = thread.wait()
        assert result.metrics == {"learner/pairs": 2, "learner/lr": 0.5} and isinstance(result.sync, SyncError)
        thread.start_step(["a"], 0.5, publish_as=None)
        assert thread.wait().sync is None and not thread.busy
    finally:
        thread.shutdown()


def test_failed_step_sync_keeps_the_step_and_resyncs_every_generator(tmp_path):
    """A generator killed during the step's weight sync: the step counts, the run waits for the
    restart, and every generator gets the new version before any prompt goes out."""
    c = make(tmp_path, gens=("g0-a", "g1-a"))
    c.learner.instances = ["g0-a", "g1-b"]  # generator 1 is a new instance: Ray restarted it
    c.pool.health = {0: {"instance_id": "g0-a", "version": 0}, 1: {"instance_id": "g1-b", "version": 0}}
    c._apply(finished_step(c, SyncError("generator 1 did not answer prepare_sync")))
    assert (c.state.counters.step, c.state.counters.version, c.state.counters.published) == (1, 1, 1)
    # blanked while waiting (no prompts can go out), then synced together to the new version
    assert c.learner.calls == [("wait", 0, ["blank", "blank"]), ("wait", 1, ["blank", "blank"]), ("sync", 1, [0, 1])]
    assert c.state.counters.generator_restarts == 1 and c.pool.ready() == [0, 1]
    # The dead instance's request fails later: its prompts go out again, but the restart is not
    # counted twice and the generator, already on the current weights, is not synced again.
    c.learner.calls.clear()
    c.pool.health[1] = {"instance_id": "g1-b", "version": 1}
    c._on_generator_lost(GeneratorLost(1, [], RuntimeError("actor died")))
    assert c.learner.calls == [("wait", 1, ["ready", "ready"])] and c.state.counters.generator_restarts == 1


def test_restart_seen_only_by_a_sync_is_counted_once(tmp_path):
    """Killed while it had no request out, a generator restarts unnoticed until the next sync
    reaches a new instance: that sync counts the restart (the new weights already reached it)."""
    c = make(tmp_path, gens=("g0-a", "g1-a"))
    c.learner.instances = ["g0-a", "g1-b"]
    c._sync_all()
    assert c.state.counters.generator_restarts == 1 and [s.instance for s in c.pool.states] == ["g0-a", "g1-b"]
    c._sync_all()
    assert c.state.counters.generator_restarts == 1


def test_a_sync_answered_by_a_dead_instance_leaves_its_generator_blank(tmp_path):
    c = make(tmp_path, gens=("g0-a",))
    c.pool.health = {0: {"instance_id": "g0-b", "version": 0}}
    c.pool.check_health(0, c.pool.health[0])  # the restart was seen first
    c.pool.blank(0)
    assert c.pool.on_synced([0], 1, ["g0-a"]) == 0  # the old instance's answer
    assert c.pool.states[0].status is GenStatus.BLANK


def test_dead_generator_is_resynced_after_its_restart(tmp_path):
    c = make(tmp_path, "buffer.max_policy_lag=1")
    c.state.counters.version = c.state.counters.published = 3
    c.pool.states[0].version = 3
    items = c.state.scheduler.next_items(2)
    c.learner.instances = ["g0-b"]
    c.pool.health = {0: {"instance_id": "g0-b", "version": 0}}
    c._on_generator_lost(GeneratorLost(0, [it.problem.id for it in items], RuntimeError("actor died")))
    assert c.learner.calls == [("wait", 0, ["ready"]), ("sync", 3, [0])]
    assert c.state.counters.generator_restarts == 1 and c.pool.ready() == [0]
    assert [it.problem.id for it in c.state.scheduler.next_items(2)] == [it.problem.id for it in items]  # re-issued


def test_recovery_waits_for_the_step_in_flight_whose_sync_reaches_the_restarted_generator(tmp_path):
    c = make(tmp_path)
    c.learner.instances = ["g0-b"]
    c.pool.health = {0: {"instance_id": "g0-b", "version": 0}}
    c.learner.job = finished_step(c, {"version": 1, "latency_ms": 1.0, "gbps": 1.0, "instances": ["g0-b"]})
    c._on_generator_lost(GeneratorLost(0, [], RuntimeError("actor died")))
    assert c.state.counters.step == 1 and c.pool.ready() == [0] and c.pool.states[0].version == 1
    assert [call for call in c.learner.calls if call[0] == "sync"] == []  # the step's sync was enough
    assert c.state.counters.generator_restarts == 1


def test_sync_failing_again_after_recovery_ends_the_run(tmp_path):
    c = make(tmp_path)
    c.learner.fail = 1
    c.pool.health = {0: {"instance_id": "g0-a", "version": 0}}
    with pytest.raises(RunFailed, match="weight sync of version 1 to generators \\[0\\] failed"):
        c._apply(finished_step(c, SyncError("receiver timed out")))


def test_evaluation_survives_generator_0_dying_once_but_not_twice(tmp_path):
    from ray.exceptions import ActorDiedError

    c = make(tmp_path)
    died, outcomes = [], [ActorDiedError(), {"eval/accuracy": 0.5}]

    def evaluate_once(step):
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    c._evaluate_once = evaluate_once
    c._on_generator_lost = lambda event: died.append(event.generator)
    assert c._evaluate(4) == {"eval/accuracy": 0.5} and died == [0]
    outcomes[:] = [ActorDiedError(), ActorDiedError()]
    with pytest.raises(RunFailed, match="died twice during the evaluation at step 4"):
        c._evaluate(4)


def test_older_weights_in_a_result_mean_a_restart_counted_once_and_resynced(tmp_path):
    c = make(tmp_path)
    c.state.counters.version = c.state.counters.published = 3
    c.pool.states[0].version = 3
    c.learner.instances = ["g0-b"]
    c.pool.health = {0: {"instance_id": "g0-b", "version": 0}}
    c._recover_generator(0)
    assert [call for call in c.learner.calls if call[0] == "sync"] == [("sync", 3, [0])]
    assert c.state.counters.generator_restarts == 1
    # a second old result from the same restart: the instance is known and, once synced, current
    c.pool.health = {0: {"instance_id": "g0-b", "version": 3}}
    c._recover_generator(0)
    assert [call for call in c.learner.calls if call[0] == "sync"] == [("sync", 3, [0])]
    assert c.state.counters.generator_restarts == 1


def test_each_iteration_has_its_own_lr_schedule_that_never_reaches_zero(tmp_path):
    """Four pairs per prompt: the old horizon (one pair per prompt) was 2 steps for these 8
    prompts, and the other 6 steps trained at lr 0. The iteration now sizes its cosine from the
    pairs it is expected to train, and the floor is above zero."""
    c = make(tmp_path, "learner.schedule=warmup_cosine", "learner.lr=1.0", "learner.min_lr_ratio=0.1",
             "learner.warmup_ratio=0.0")
    lrs = []

    def start_step(pairs, lr, publish_as):
        lrs.append(lr)
        c.learner.job = StepResult(pairs, {"learner/lr": lr}, 0.0, None)

    c.learner.start_step = start_step
    for it in c.state.scheduler.next_items(8):
        pid = it.problem.id
        c.state.scheduler.buffered(pid, 4)
        c.state._pair_counts.append(4)
        c.state.buffer.add([PreferencePair(pid, it.problem.prompt, f"good{k}", "bad", 0) for k in range(4)], 0)
    while len(c.state.buffer):
        c._maybe_train()
        c._apply_learner_result()
    assert len(lrs) == 8 and lrs[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[-1] > 0.1
    lines = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "learner/lr" in line]
    assert len(lines) == 8


def test_samples_log_writes_labelled_groups_and_is_cut_back_on_resume(tmp_path):
    from pfrl.commands.status import summarize
    from pfrl.types import LabelledGroup, RolloutGroup

    c = make(tmp_path, "metrics.samples_rate=1.0", "metrics.sample_chars=16")

    def label_one():
        item = c.state.scheduler.next_items(1)[0]
        group = RolloutGroup(item, ["x = 40 + 2 = 42, so the answer is 42", "41"], [[1], [2]], ["stop", "stop"], 1, 2, 0)
        result = LabelledGroup(item.problem.id, 0, 0, "42", [1.0, 0.0], [(0, 1)], vote_share=0.5)
        c.state.account(group, result, [PreferencePair(item.problem.id, "q", "good", "bad", 0)])

    label_one()
    saved = c.state.state_dict()
    label_one()  # after the checkpoint: rolled back on resume
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"completions": ["x = 40 + 2 = 42,", "41"]' in lines[0]
    assert '"label": "42"' in lines[0] and '"pairs": [[0, 1]]' in lines[0]
    c.state.samples.sink.truncate(saved["samples_lines"])  # what a resume from `saved` does
    assert [s["prompt_id"] for s in summarize(tmp_path, recent=5, samples=3)["samples"]] == ["p0"]


def test_samples_are_a_seeded_share_of_prompts():
    from pfrl.samples import _chosen

    picked = [_chosen(f"p{i}", 0.25, seed=0) for i in range(400)]
    assert 60 < sum(picked) < 140 and picked == [_chosen(f"p{i}", 0.25, seed=0) for i in range(400)]
    assert not any(_chosen(f"p{i}", 0.0, seed=0) for i in range(50))
