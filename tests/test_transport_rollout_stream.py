"""The generator's stream loop over real ZMQ sockets, with a plain function in place of vLLM:
batching, order, backpressure reported as a stall, retry after a failed sync, clean stop."""

from __future__ import annotations

import time

from pfrl.generation import WeightsIncomplete
from pfrl.transport.rollout_stream import RolloutStream
from pfrl.transport.streams import PullStream, PushStream
from pfrl.types import Problem, PromptItem, RolloutGroup


def _items(n: int) -> list[PromptItem]:
    return [PromptItem(Problem(id=f"p{i}", prompt=f"q{i}"), iteration=0) for i in range(n)]


class Echo:
    """Turns each prompt into a group holding its prompt reversed; records the batch sizes."""

    def __init__(self, fail_first: int = 0, pad: int = 0):
        self.batches: list[int] = []
        self.fail_first = fail_first
        self.pad = "x" * pad  # big groups fill socket buffers quickly (stall tests)

    def __call__(self, items: list[PromptItem]) -> list[RolloutGroup]:
        if self.fail_first:
            self.fail_first -= 1
            raise WeightsIncomplete("mid-resync")
        self.batches.append(len(items))
        return [
            RolloutGroup(
                item=it,
                completions=[it.problem.prompt[::-1] + self.pad] * 2,
                token_ids=[[1], [2]],
                finish_reasons=["stop", "stop"],
                prompt_tokens=1,
                completion_tokens=2,
                policy_version=0,
            )
            for it in items
        ]


def _wait(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _streams(hwm: int = 64) -> tuple[PushStream, PullStream]:
    return PushStream(bind=True, host="127.0.0.1"), PullStream(bind=True, host="127.0.0.1", hwm=hwm)


def test_stream_samples_in_bounded_batches_and_keeps_order():
    prompts, rollouts = _streams()
    echo = Echo()
    stream = RolloutStream(echo, prompts.addr, rollouts.addr, batch_size=3, stall_timeout_s=5)
    stream.start()
    for item in _items(7):
        prompts.send(item, timeout_s=10)
    got = [rollouts.recv(timeout_s=10) for _ in range(7)]
    assert [g.item.problem.id for g in got] == [f"p{i}" for i in range(7)]
    assert got[2].completions == ["2q", "2q"]
    assert max(echo.batches) <= 3 and sum(echo.batches) == 7
    _wait(lambda: stream.health().groups == 7)  # counted just after each send
    health = stream.health()
    assert (health.prompts, health.groups, health.completion_tokens, health.stalled) == (7, 7, 14, False)
    stream.stop(5)
    assert not stream.health().running


def _feed(prompts: PushStream, n: int, until) -> None:
    """Send up to n prompts, without blocking, until `until()` holds."""
    for item in _items(n):
        while not prompts.try_send(item):
            if until():
                return
            time.sleep(0.01)


def test_a_full_downstream_is_reported_as_stalled_and_clears_when_read():
    prompts, rollouts = _streams(hwm=1)  # the consumer does not read at first
    stream = RolloutStream(Echo(pad=1 << 17), prompts.addr, rollouts.addr, batch_size=2, stall_timeout_s=0.5)
    stream.start()
    _feed(prompts, 200, lambda: stream.health().stalled)
    _wait(lambda: stream.health().stalled, timeout_s=20)
    assert "StreamStalled" in stream.health().last_error
    delivered = stream.health().groups
    while rollouts.recv(timeout_s=2) is not None:  # downstream reads again: the stream resumes
        pass
    assert stream.health().groups > delivered and not stream.health().stalled
    start = time.monotonic()
    stream.stop(10)
    assert time.monotonic() - start < 5 and not stream.health().running


def test_batch_is_retried_after_a_failed_sync_and_other_errors_end_the_stream():
    prompts, rollouts = _streams()
    stream = RolloutStream(
        Echo(fail_first=1),
        prompts.addr,
        rollouts.addr,
        batch_size=2,
        stall_timeout_s=5,
        retry_on=(WeightsIncomplete,),
    )
    stream.start()
    prompts.send(_items(1)[0])
    assert rollouts.recv(timeout_s=10).item.problem.id == "p0"
    assert stream.health().errors == 1 and "WeightsIncomplete" in stream.health().last_error
    stream.stop(5)

    def broken(items):
        raise RuntimeError("engine dead")

    prompts2, rollouts2 = _streams()
    stream2 = RolloutStream(broken, prompts2.addr, rollouts2.addr, batch_size=2, stall_timeout_s=5)
    stream2.start()
    prompts2.send(_items(1)[0])
    _wait(lambda: not stream2.health().running)
    assert "engine dead" in stream2.health().last_error
