"""The online loop's decisions, as pure functions of one snapshot of the run.

How many prompts to put in flight, how many pairs to train now, and how many steps an iteration
is expected to take (its learning-rate horizon). Nothing here touches Ray, threads or files, so
every rule is unit-tested on hand-built snapshots.

Staleness with sparse syncs. A pair carries the version of the weights that sampled it. It may be
trained while it is at most `buffer.max_policy_lag` versions older than the newest weights the
generators have been *sent* (`published`), not the learner's own version: with
`sync.every_steps: k` the generators cannot hold anything newer between syncs, so measuring
against the learner would make every pair stale k steps after a sync and, with `k > lag + 1`,
stop the run (nothing trains, so no sync comes). Measured against `published`, fresh samples are
always trainable and every valid combination makes progress; the learner then trains on pairs at
most `lag + k - 1` of its own steps old (reported as `buffer/policy_lag`).

How much to put in flight follows from the same bound. Whatever is sampled now carries (at least)
the published version, and can only be trained by the steps that start before the publication that
makes it stale: `trainable_steps`. Issuing more than those steps take is sampling pairs to drop
them. With lag 1 and one sync per step, that is two steps' pairs while the learner waits, but only
one while it trains (the step in flight took its pairs already and its sync comes next); the old
rule kept two steps' worth out at all times, and on a model that makes 2-3 pairs per prompt a
quarter of the pairs arrived two versions old and were dropped (docs/benchmarks.md, bench e2e run 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Standard deviations of the in-flight yield kept below the pairs that the steps able to train them
# need (one-sided normal bound: 1.0 overshoots about one time in six). bench e2e on the CPU preset,
# 20 updates, two runs each, the bound applied while the learner steps: 0 (the mean, rounded down)
# dropped 39-50 pairs of 640 as stale, 0.5 dropped 32-41, 1.0 dropped 15-19, at 0.75-0.79,
# 0.78-0.83 and 0.80-0.83 s per update; applied always, `make demo` 181-201 -> 113-129 stale of
# about 2,900 trained (docs/benchmarks.md run 19).
SPREAD_Z = 1.0


@dataclass(frozen=True)
class LoopSnapshot:
    """What the decisions read, taken from the run state at one instant."""

    max_policy_lag: int
    pairs_per_step: int
    capacity: int
    num_learners: int
    buffered: int  # trainable pairs in the replay buffer
    inflight_prompts: int  # prompts out for sampling or labelling
    unissued_prompts: int  # prompts of the current iteration not yet sent out
    pairs_per_prompt: float  # recent pair yield per labelled prompt
    learner_busy: bool
    stopping: bool
    steps_done: int
    max_steps: int | None
    sync_every_steps: int = 1
    expiring: int = 0  # buffered pairs the step in flight's publication makes stale (0 when none is)
    yield_known: bool = True  # some prompt has been labelled (else pairs_per_prompt is a guess)
    num_generators: int = 1
    pairs_per_prompt_sd: float = 0.0  # spread of the recent per-prompt yields

    @property
    def lockstep(self) -> bool:
        return self.max_policy_lag == 0

    @property
    def at_max_steps(self) -> bool:
        return self.max_steps is not None and self.steps_done >= self.max_steps

    @property
    def tail(self) -> bool:
        """Nothing more will arrive in this iteration: what is buffered is all there is."""
        return self.unissued_prompts == 0 and self.inflight_prompts == 0


def trainable_steps(s: LoopSnapshot) -> int:
    """Learner steps, not yet started, that can train a pair sampled now: those that start before
    the publication that makes it stale. Syncs come after steps k, 2k, ... (`sync.every_steps` k);
    a pair survives `lag // k` of them, so the last step that may train it is the one ending at
    the (lag // k + 1)-th sync after the steps done. A step in flight has taken its pairs already.
    With k = 1: lag + 1 steps while the learner waits, lag while it trains (0 in lockstep)."""
    k = s.sync_every_steps
    next_sync = (s.steps_done // k + 1) * k  # the step after which the next publication comes
    last_step = next_sync + (s.max_policy_lag // k) * k  # the last step the pair can be trained in
    first_step = s.steps_done + 1 + int(s.learner_busy)
    return max(0, last_step - first_step + 1)


def prompt_deficit(s: LoopSnapshot) -> int:
    """Prompts to put in flight now: enough pairs for the steps that can still train what is sampled
    now (`trainable_steps`), counting what is buffered and what the prompts in flight are expected
    to yield; none while stopping. Lockstep samples one step's pairs, none while the policy is
    changing (each batch is sampled by one version), whatever `sync.every_steps`."""
    if s.stopping or (s.lockstep and s.learner_busy):
        return 0
    yield_ = max(s.pairs_per_prompt, 0.1)
    steps = 1 if s.lockstep else trainable_steps(s)
    target = min(s.pairs_per_step * steps, s.capacity)
    if not s.lockstep:
        return _prompts_within_need(s, target - usable_buffered(s), yield_)
    missing = target - usable_buffered(s) - s.inflight_prompts * s.pairs_per_prompt
    return max(0, math.ceil(missing / yield_))


def _prompts_within_need(s: LoopSnapshot, need: float, yield_: float) -> int:
    """Prompts to add so that what is in flight rarely brings more pairs than the steps that can
    train them need: the surplus is dropped stale after the last of those steps. A prompt makes 0-4
    pairs, so aiming the in-flight prompts' mean yield at `need` overshot half the time (7-9% of
    pairs trained on the CPU preset with answer checks, more with the demo's low, uneven vote
    yield). Instead the prompts in flight, `m`, stay where their yield exceeds `need` with about one
    chance in six: `m * yield + SPREAD_Z * sd * sqrt(m) <= need`. The prompts this leaves out go as
    top-ups once earlier ones are labelled (less uncertain, so the bound lets them out), at least
    one prompt whenever nothing is in flight. A waiting learner's own step is not held back:
    `request_prompts` sends first the prompts it lacks at the mean. Lockstep keeps the mean: it
    trains only whole rounds, so a short round costs a second one."""
    if need <= 0:
        return 0
    spread = SPREAD_Z * s.pairs_per_prompt_sd
    root = (-spread + math.sqrt(spread * spread + 4 * yield_ * need)) / (2 * yield_)
    fits = math.floor(root * root + 1e-9)  # the largest m that keeps the bound
    return max(fits - s.inflight_prompts, 0 if s.inflight_prompts else 1)


def usable_buffered(s: LoopSnapshot) -> int:
    """Buffered pairs that a step not yet started can train. The pairs the step in flight's sync
    makes stale are dropped before any such step: counted, they stood in for pairs the next step
    then lacked, and the learner waited for a request after every such drop."""
    return s.buffered - (s.expiring if s.learner_busy else 0)


def request_prompts(s: LoopSnapshot, per_request: int) -> int:
    """Prompts for the next request: the deficit, at most `per_request`. While the learner waits
    for pairs that nothing in flight will bring, only the prompts its step lacks: a request of 1-2
    prompts comes back in about half the time of one of 8 (0.2-0.3 s against 0.5 s on the CPU
    preset), and the learner was waiting that whole time for its last few pairs. The request that
    follows carries the rest of the deficit."""
    if not s.yield_known:
        return first_requests(s, per_request)
    n = min(per_request, prompt_deficit(s))
    if s.learner_busy or n == 0:
        return n
    short = s.pairs_per_step - usable_buffered(s) - s.inflight_prompts * s.pairs_per_prompt
    return min(n, math.ceil(short / max(s.pairs_per_prompt, 0.1))) if short > 0 else n


def first_requests(s: LoopSnapshot, per_request: int) -> int:
    """Before any prompt is labelled: at most one request per generator. The yield is a guess then
    (1 pair per prompt), and a low guess is paid in stale pairs: the code preset yields about 2.75,
    so its first 64 prompts brought some 176 pairs for the two steps that could train them and 134
    were dropped (docs/benchmarks.md). The learner waits for the first labels either way; what they
    yield sizes every later request. Still no more than the deficit at the guess: with 2 pairs a
    step, a full first request of 8 prompts overshot lockstep's round."""
    room = s.num_generators * per_request - s.inflight_prompts
    return max(0, min(per_request, room, prompt_deficit(s)))


def engine_room(per_request: int, max_num_seqs: int, n_samples: int) -> int:
    """Prompts one generator may hold unanswered. Requests on one generator run in the same engine
    batch (pfrl/engine_stepper.py), so it takes prompts while its engine has sequences free for all
    their samples (`max_num_seqs / n_samples`); beyond that they would only queue inside vLLM,
    committed to the version they were issued under. Two requests at least, so that one is always
    waiting when another finishes and the engine never waits for the controller. Measured on the
    tiny math preset (docs/benchmarks.md, bench e2e run 18): one request at a time in an engine of
    64 sequences (before the stepper), 0.83-0.87 s per update; requests sharing the engine with
    room for 32 prompts on 256 sequences, 0.74-0.80 s."""
    return max(2 * per_request, max_num_seqs // max(n_samples, 1))


def pairs_to_train(s: LoopSnapshot) -> int:
    """Pairs to train on now (0: wait). A full step when the buffer has one; at an iteration's tail
    whatever is left (when every rank gets a pair); in lockstep only once every rollout of this
    version is in."""
    if s.learner_busy or s.stopping or s.at_max_steps:
        return 0
    if s.lockstep and s.inflight_prompts:
        return 0
    if s.buffered >= s.pairs_per_step:
        return s.pairs_per_step
    if s.tail and s.buffered >= s.num_learners:
        return s.buffered
    return 0


def steps_left(s: LoopSnapshot) -> int:
    """Learner steps this iteration is still expected to take, this one included: what is buffered
    plus what the prompts in flight and not yet issued should yield, capped by `run.max_steps`."""
    expected = s.buffered + s.pairs_per_prompt * (s.inflight_prompts + s.unissued_prompts)
    left = max(1, math.ceil(expected / s.pairs_per_step))
    if s.max_steps is not None:
        left = min(left, max(1, s.max_steps - s.steps_done))
    return left
