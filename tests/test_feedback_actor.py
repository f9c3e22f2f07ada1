"""The Ray labeller actor in a local Ray: request/response over msgpack."""

from __future__ import annotations

import time

import pytest
from helpers import group, wrong_math

from pfrl.config import LabellerSection
from pfrl.tasks import synthetic_code, synthetic_math
from pfrl.types import LabelledGroup, decode, encode

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_actor_labels_bytes(ray_local):
    from actors.labeller import LabellerActor

    cfg = LabellerSection().model_dump(mode="json")
    actor = LabellerActor.options(num_cpus=0.5).remote("math", cfg, 0)
    problems = synthetic_math.generate(4, seed=13)
    groups = [group(p, [s, wrong_math(s), s], version=3) for p, s in problems]
    try:
        assert ray_local.get(actor.ping.remote())
        labelled = decode(ray_local.get(actor.label.remote(encode(groups))))
        assert all(isinstance(x, LabelledGroup) for x in labelled)
        assert [x.prompt_id for x in labelled] == [p.id for p, _ in problems]
        assert [x.scores for x in labelled] == [[1.0, 0.0, 1.0]] * 4 and labelled[0].policy_version == 3
        assert all(x.pairs and x.skipped is None for x in labelled)
        with pytest.raises(ray_local.exceptions.RayTaskError, match="expected RolloutGroup"):
            ray_local.get(actor.label.remote(encode(labelled)))
    finally:
        ray_local.get(actor.stop.remote())


@pytest.mark.timeout(300)
def test_code_actor_survives_a_hostile_group(ray_local):
    from actors.labeller import LabellerActor

    cfg = LabellerSection(sandbox={"timeout_s": 0.5, "cpu_s": 1}, source="ground_truth").model_dump(mode="json")
    actor = LabellerActor.options(num_cpus=0.5).remote("code", cfg, 0)
    problem, solution = synthetic_code.generate(1, seed=2)[0]
    bomb = "```python\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n```"
    start = time.monotonic()
    (out,) = decode(ray_local.get(actor.label.remote(encode([group(problem, [solution, bomb])]))))
    assert out.scores == [1.0, 0.0] and [list(p) for p in out.pairs] == [[0, 1]]
    assert ray_local.get(actor.ping.remote()) and time.monotonic() - start < 120
    ray_local.get(actor.stop.remote())
