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
makes it stale: `trainable_steps`. With lag 1 and one sync per step, that is two steps' pairs while
the learner waits, but only one while it trains (the step in flight took its pairs already and its
sync comes next); the old rule kept two steps' worth out at all times, and on a model that makes 2-3
pairs per prompt a quarter of the pairs arrived two versions old and were dropped (docs/benchmarks.md,
bench e2e run 8). Within that need the loop aims high (`COVER_Z`): a prompt's yield is known only
once it is labelled, a step that comes up short waits a whole sampling latency for a top-up, and a
group that arrives once its steps are covered is sampled again rather than dropped (`wants_group`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Standard deviations of the in-flight yield kept *above* the pairs that the steps able to train them
# need (one-sided normal bound: 1.0 falls short about one time in six). A group that arrives once
# those steps are covered is sampled again later, not buffered to go stale (`wants_group`), so
# overshooting costs generation only; falling short costs the learner a second request's latency.
# Before groups could be sent back, the bound was kept *below* the need (stale drops otherwise):
# the learner then waited on a top-up request most steps (docs/benchmarks.md runs 19, 27).
COVER_Z = 1.0
# A sampled request that has waited longer than this for its labels means the labellers are the
# slow half (the code preset's sandbox: seconds per request; the math answer check: milliseconds).
# Then the prompts in flight aim one sd *below* the need instead: overshooting would only lengthen
# the labellers' queue, and every prompt sent back costs its sandbox runs again (`make demo` on the
# code preset, back to back: loop 124 s on the code before, 130 s aimed above with 54 prompts
# labelled twice, 125 s with this flip and 2; docs/benchmarks.md runs 27-28).
LABELS_BEHIND_S = 0.25


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
    labels_behind: bool = False  # a sampled request has waited over LABELS_BEHIND_S for its labels
    doomed_prompts: int = 0  # of inflight_prompts, those issued under weights no step can still train

    @property
    def useful_inflight(self) -> int:
        """Prompts in flight whose pairs some step not yet started can still train."""
        return self.inflight_prompts - self.doomed_prompts

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


def trainable_steps(s: LoopSnapshot, age: int = 0) -> int:
    """Learner steps, not yet started, that can train a pair `age` published versions old (0: sampled
    now): those that start before the publication that makes it stale. Syncs come after steps k,
    2k, ... (`sync.every_steps` k); a pair survives `(lag - age) // k` more of them, so the last step
    that may train it is the one ending at the next sync after those. A step in flight has taken its
    pairs already. With k = 1 and age 0: lag + 1 steps while the learner waits, lag while it trains
    (0 in lockstep)."""
    if age > s.max_policy_lag:
        return 0
    k = s.sync_every_steps
    next_sync = (s.steps_done // k + 1) * k  # the step after which the next publication comes
    last_step = next_sync + ((s.max_policy_lag - age) // k) * k  # the last step the pair can be trained in
    first_step = s.steps_done + 1 + int(s.learner_busy)
    return max(0, last_step - first_step + 1)


def wants_group(s: LoopSnapshot, age: int, as_fresh: int) -> bool:
    """Whether a labelled group `age` published versions old is worth buffering: the steps that can
    still train it lack pairs, counting the `as_fresh` buffered pairs at least as new as it (any of
    those steps can take them). Otherwise its pairs could only be dropped stale after those steps,
    and its prompt is better sampled again under newer weights."""
    return as_fresh < s.pairs_per_step * trainable_steps(s, age)


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
        return _prompts_to_cover(s, target - usable_buffered(s), yield_)
    missing = target - usable_buffered(s) - s.inflight_prompts * s.pairs_per_prompt
    return max(0, math.ceil(missing / yield_))


def _prompts_to_cover(s: LoopSnapshot, need: float, yield_: float) -> int:
    """Prompts to add so that what is in flight covers `need` pairs with about five chances in six:
    the smallest `m` in flight with `m * yield - COVER_Z * sd * sqrt(m) >= need`. A prompt makes 0-4
    pairs; aimed at the mean, a step came up short half the time and its learner waited for a
    top-up request (a whole sampling latency, 0.3-0.45 s on the CPU preset) for its last few pairs.
    What overshoots is not dropped stale: `wants_group` sends those prompts back to be sampled again.
    While the labellers are behind (`LABELS_BEHIND_S`) the bound flips to one sd below the need.
    A waiting learner's own step is sent first: `request_prompts` sends the prompts it lacks at the
    mean. Lockstep keeps the mean: it trains only whole rounds, so a short round costs a second one."""
    if need <= 0:
        return 0
    spread = (-COVER_Z if s.labels_behind else COVER_Z) * s.pairs_per_prompt_sd
    root = (spread + math.sqrt(spread * spread + 4 * yield_ * need)) / (2 * yield_)
    cover = math.ceil(root * root - 1e-9)  # the smallest m that keeps the bound
    return max(cover - s.useful_inflight, 0 if s.useful_inflight else 1)


def doomed_prompts(s: LoopSnapshot, inflight_by_age: dict[int, int]) -> int:
    """Prompts in flight (by how many published versions old their request's weights were) whose
    groups no step not yet started can train: they will be sent back (`wants_group`). Counted as
    coming pairs, they stood in for the next step's: with more prompts in flight than a step needs,
    a step started while the previous version's surplus was still sampling, its successor was
    left short and waited a whole sampling round (bench e2e run 29a: two steps of 0.8-1.0 s)."""
    return sum(n for age, n in inflight_by_age.items() if trainable_steps(s, age) == 0)


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
    short = s.pairs_per_step - usable_buffered(s) - s.useful_inflight * s.pairs_per_prompt
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
