"""The Ray labeller actor in a local Ray: request/response over msgpack, and the ZMQ stream loop."""

from __future__ import annotations

import time

import pytest

from pfrl.config import LabellerSection
from pfrl.tasks import synthetic_code, synthetic_math
from pfrl.transport.streams import PullStream, PushStream
from pfrl.types import LabelledGroup, PromptItem, RolloutGroup, decode, encode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def group(problem, completions, version=0) -> RolloutGroup:
    return RolloutGroup(PromptItem(problem, 0), completions, [], [], 0, 0, version)


def wrong_math(solution: str) -> str:
    head, _, tail = solution.rpartition("\\boxed{")
    return f"{head}\\boxed{{{int(tail.split('}')[0]) + 1}}}."


@pytest.mark.timeout(300)
def test_actor_labels_bytes_and_streams(ray_local):
    from actors.labeller import LabellerActor

    cfg = LabellerSection().model_dump(mode="json")
    actor = LabellerActor.options(num_cpus=0.5).remote("math", cfg, 0)
    problems = synthetic_math.generate(6, seed=13)
    groups = [group(p, [s, wrong_math(s), s], version=3) for p, s in problems]

    labelled = decode(ray_local.get(actor.label.remote(encode(groups[:2]))))
    assert all(isinstance(x, LabelledGroup) for x in labelled)
    assert [x.scores for x in labelled] == [[1.0, 0.0, 1.0]] * 2 and labelled[0].policy_version == 3

    feed, results = PushStream(bind=True, host="127.0.0.1"), PullStream(bind=True, host="127.0.0.1")
    try:
        ray_local.get(actor.run_stream.remote(feed.addr, results.addr))
        for g in groups:
            feed.send(g)
        got = [results.recv(timeout_s=60) for _ in groups]
        assert all(isinstance(x, LabelledGroup) for x in got)
        assert sorted(x.prompt_id for x in got) == sorted(p.id for p, _ in problems)
        assert all(x.pairs and x.skipped is None for x in got)
        stats = ray_local.get(actor.ping.remote())
        assert stats.streaming and stats.groups == len(groups) + 2 and stats.stream_error is None
    finally:
        ray_local.get(actor.stop.remote())
        feed.close()
        results.close()
    assert not ray_local.get(actor.ping.remote()).streaming


@pytest.mark.timeout(300)
def test_code_actor_survives_a_hostile_group(ray_local):
    from actors.labeller import LabellerActor

    cfg = LabellerSection(sandbox={"timeout_s": 0.5, "cpu_s": 1}).model_dump(mode="json")
    actor = LabellerActor.options(num_cpus=0.5).remote("code", cfg, 0)
    problem, solution = synthetic_code.generate(1, seed=2)[0]
    bomb = "```python\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n```"
    start = time.monotonic()
    (out,) = decode(ray_local.get(actor.label.remote(encode([group(problem, [solution, bomb])]))))
    assert out.scores == [1.0, 0.0] and [list(p) for p in out.pairs] == [[0, 1]]
    assert ray_local.get(actor.ping.remote()).alive and time.monotonic() - start < 120
    ray_local.get(actor.stop.remote())
