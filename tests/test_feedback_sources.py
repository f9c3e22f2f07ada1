"""Label sources and their configuration: the schedule, the renamed keys, the user's scorer, and
`label/agree_gt` in the run's metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfrl.config import ConfigError, LabellerSection, load_config
from pfrl.feedback.labeller import Labeller, resolve_source
from pfrl.feedback.sandbox import SandboxJob, TestResult, TestStatus
from pfrl.run_meters import RunMeters
from pfrl.types import LabelledGroup, Problem, PromptItem, RolloutGroup

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCHEDULE = "labeller.schedule=[{source: reference, pair_strategy: one_random}, " \
           "{source: self_consistency, pair_strategy: all_chosen}]"


def group(problem: Problem, completions: list[str], iteration: int = 0) -> RolloutGroup:
    return RolloutGroup(PromptItem(problem, iteration), completions, [], [], 0, 0, 0)


# -- sources and schedule ---------------------------------------------------------------------------
def test_auto_resolves_to_frontier_references_only():
    gt_only = Problem(id="a", prompt="Q", answer="3", test_inputs=["[1]"], test_outputs=["2"])
    assert resolve_source("math", "auto", gt_only) == "self_consistency"
    assert resolve_source("code", "auto", gt_only) == "self_consistency"
    assert resolve_source("math", "auto", Problem(id="b", prompt="Q", reference="3")) == "reference"
    written = Problem(id="c", prompt="Q", reference_test_inputs=["[1]"], reference_test_outputs=["2"])
    assert resolve_source("code", "auto", written) == "reference"
    assert resolve_source("code", "ground_truth", written) == "ground_truth"  # only by name


def test_schedule_entries_apply_per_iteration_and_the_last_one_after():
    cfg = load_config(None, [SCHEDULE]).labeller
    assert [(p.source, p.pair_strategy) for p in (cfg.plan(i) for i in range(4))] == [
        ("reference", "one_random"), *[("self_consistency", "all_chosen")] * 3
    ]
    plain = LabellerSection(source="self_consistency", pair_strategy="all_chosen")
    assert plain.plan(0) == plain.plan(7) == cfg.plan(1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["labeller.mode=auto"], "labeller.mode was replaced by labeller.source"),
        (["labeller.source=self-consistency"], "spelled self_consistency"),
        (["labeller.min_success_frac=0.5"], "labeller.min_successful_programs"),
        (["labeller.chosen_min_score=0.5"], "labeller.min_pass_ratio"),
        (["labeller.margin=0.6"], "count of test cases per source"),
        ([SCHEDULE, "labeller.source=reference"], "drop labeller.source"),
        (["labeller.schedule=[]"], "at least one entry"),
        (["labeller.schedule=[{source: reference}]"], "labeller.schedule.0.pair_strategy"),
        (["run.task=math", "labeller.schedule=[{source: reference, pair_strategy: margin}]"],
         "margin applies to run.task=code"),
        (["run.task=code", "generator.n_samples=4", "labeller.min_successful_programs=5"],
         "above generator.n_samples"),
        (["labeller.scorer=no_such_module_here:check"], "cannot import no_such_module_here"),
        (["labeller.scorer=scorers"], "expected package.module:function"),
        (["labeller.scorer=scorers:nope"], "scorers has no function nope"),
    ],
)
def test_config_errors_are_one_line_and_name_the_fix(overrides, message, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_pair_cap_switches_off_with_null():
    assert load_config(None, ["labeller.max_pairs_per_prompt=null"]).labeller.max_pairs_per_prompt is None


def test_shipped_configs_never_train_on_ground_truth():
    for path in sorted(Path("configs").glob("*.yaml")):
        plans = load_config(path).labeller.plans()
        assert all(p.source != "ground_truth" for p in plans), path
    for tiny in ("configs/tiny-math.yaml", "configs/tiny-code.yaml"):
        assert [p.source for p in load_config(tiny).labeller.plans()] == ["self_consistency"]


# -- the user's scorer ------------------------------------------------------------------------------
def test_math_scorer_replaces_the_answer_check(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    problem = Problem(id="m", prompt="Q", reference="The answer is \\boxed{9.81}")
    completions = ["g is about 9.8", "roughly 9.79 then", "it is 10.5", "no idea"]
    with Labeller("math", LabellerSection(source="reference"), seed=0) as builtin:
        assert builtin.label(group(problem, completions)).scores == [0.0, 0.0, 0.0, 0.0]
    cfg = load_config(None, ["labeller.source=reference", "labeller.scorer=scorers:within_one_percent"]).labeller
    with Labeller("math", cfg, seed=0) as lab:
        out = lab.label(group(problem, completions))
    assert out.label == "9.81" and out.scores == [1.0, 1.0, 0.0, 0.0] and out.pairs


_CALLS: list[list[SandboxJob]] = []


def fake_runner(jobs: list[SandboxJob]) -> list[list[TestResult]]:
    """A runner that 'runs' a program by reading the answer it states in a comment."""
    _CALLS.append(jobs)
    return [[TestResult(TestStatus.OK, (job.program or "").split("# prints ")[-1].strip()) for _ in job.test_inputs]
            for job in jobs]


def test_each_distinct_program_runs_once():
    """Same program, same inputs: one run, its results given to every copy, in order."""
    from pfrl.feedback.code_label import run_distinct

    calls: list[list[SandboxJob]] = []

    def runner(jobs):
        calls.append(jobs)
        return [[TestResult(TestStatus.OK, output=f"{j.program}{j.test_inputs}")] for j in jobs]

    jobs = [SandboxJob("a", ["1"]), SandboxJob("b", ["1"]), SandboxJob("a", ["1"]), SandboxJob("a", ["2"]),
            SandboxJob(None, ["1"]), SandboxJob(None, ["1"])]
    out = run_distinct(jobs, runner)
    assert [r[0].output for r in out] == ["a['1']", "b['1']", "a['1']", "a['2']", "None['1']", "None['1']"]
    assert len(calls) == 1 and len(calls[0]) == 4
    assert run_distinct([], runner) == [] and len(calls) == 1


def test_code_scorer_replaces_the_sandbox(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "fake_runner_mod", __import__(__name__))
    cfg = LabellerSection.model_validate({
        "scorer": "fake_runner_mod:fake_runner", "source": "self_consistency", "pair_strategy": "margin",
        "min_successful_programs": 2, "margin": {"self_consistency": 2},
    })
    problem = Problem(id="c", prompt="Q", entry_point="f", test_inputs=["[1]", "[2]"], test_outputs=["7", "7"])
    completions = [f"```python\n# prints {v}\n```" for v in ("7", "7", "8")]
    _CALLS.clear()
    with Labeller("code", cfg, seed=0) as lab:
        assert lab.sandbox is None
        out = lab.label(group(problem, completions))
    assert [job.test_inputs for job in _CALLS[0]] == [["[1]", "[2]"]] * 2  # the two "prints 7" run once
    assert out.pseudo_outputs == ["7", "7"] and out.scores == [1.0, 1.0, 0.0] and out.agree_gt == 1.0
    assert out.pairs == [(0, 2)]  # the two right programs are one text: one pair


def test_example_code_runner_runs_programs(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import scorers

    (results,) = scorers.run_patiently([SandboxJob("def f(x):\n    return x * 2\n", ["[3]"], "f")])
    scorers._patient_sandbox().close()
    assert results[0].status.ran and results[0].output.strip() == "6"


# -- label/agree_gt ---------------------------------------------------------------------------------
def test_agree_gt_is_averaged_over_groups_that_carry_it():
    meters = RunMeters("math")
    problem = Problem(id="p", prompt="Q")
    for agree in (1.0, 0.0, None, 1.0):
        result = LabelledGroup("p", 0, 0, "1", [1.0, 0.0], [(0, 1)], vote_share=0.75, agree_gt=agree)
        meters.on_labelled(group(problem, ["a", "b"]), result)
    assert meters._label_stats()["label/agree_gt"] == pytest.approx(2 / 3)
    assert "label/agree_gt" not in RunMeters("math")._label_stats()


def test_a_scheduled_config_survives_the_trip_to_the_actors():
    """Fleet hands labellers `cfg.labeller.model_dump()`; the schedule must validate again there."""
    cfg = load_config(Path("configs/code-7b.yaml")).labeller
    again = LabellerSection.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg and again.plan(2).source == "self_consistency"


# -- the tiny presets still give pairs ---------------------------------------------------------------
def test_tiny_code_preset_pairs_on_a_typical_group():
    """What the bootstrap model samples on the synthetic code task: some right programs, some with
    one operation wrong, some that crash or have no code. Under the preset's self-consistency rules
    (4 successful programs per input, a margin of 3 of 6 tests) the right ones are chosen."""
    from pfrl.tasks import synthetic_code

    cfg = load_config(Path("configs/tiny-code.yaml")).labeller
    cfg = cfg.model_copy(update={"sandbox": cfg.sandbox.model_copy(update={"timeout_s": 1.0, "cpu_s": 1})})
    problems = synthetic_code.generate(4, seed=3)
    groups = []
    for problem, solution in problems:
        off = solution.replace("return ", "return 1 + ", 1)
        completions = [solution] * 4 + [off] * 2 + ["```python\nraise SystemExit(1)\n```", "no code"]
        groups.append(group(problem, completions))
    with Labeller("code", cfg, seed=0) as lab:
        labelled = lab.label_many(groups)
    for out, (problem, _) in zip(labelled, problems, strict=True):
        assert out.skipped is None and out.pseudo_outputs == problem.test_outputs and out.agree_gt == 1.0
        # one right text against three wrong ones (off by one, a crash, no code): three pairs
        assert out.pairs and all(c < 4 <= r for c, r in out.pairs) and len(out.pairs) == 3


def test_tiny_math_preset_pairs_on_a_typical_group():
    from pfrl.tasks import synthetic_math

    cfg = load_config(Path("configs/tiny-math.yaml")).labeller
    problem, solution = synthetic_math.generate(1, seed=3)[0]
    wrong = solution.rpartition("\\boxed{")[0] + "\\boxed{0}."
    with Labeller("math", cfg, seed=0) as lab:
        half = lab.label(group(problem, [solution] * 4 + [wrong] * 2 + ["I don't know"] * 2))
        split = lab.label(group(problem, [solution] * 3 + [wrong] * 3 + ["I don't know"] * 2))
    # one right text against two wrong ones: two pairs, not four with repeats
    assert half.skipped is None and half.vote_share == 0.5 and len(half.pairs) == 2 and half.agree_gt == 1.0
    assert split.skipped == "low_vote_share"


def test_a_named_source_without_any_label_stops_the_run_before_it_starts():
    from pfrl.errors import UserError
    from pfrl.feedback.labeller import check_sources

    cfg = load_config(None, [SCHEDULE]).labeller
    bare = [Problem(id=str(i), prompt="Q", answer="1") for i in range(3)]
    with pytest.raises(UserError, match=r"source reference \(iteration 0\) needs a frontier reference.*none of the 3"):
        check_sources("math", cfg, bare, iterations=2)
    check_sources("math", cfg, [*bare, Problem(id="r", prompt="Q", reference="1")], iterations=2)
    code_cfg = LabellerSection(source="ground_truth")
    with pytest.raises(UserError, match="ground truth"):
        check_sources("code", code_cfg, [Problem(id="c", prompt="Q", test_inputs=["1"])], iterations=1)
    with pytest.raises(UserError, match="test inputs"):
        check_sources("code", LabellerSection(source="self_consistency"), [Problem(id="c", prompt="Q")], 1)
    check_sources("code", LabellerSection(), [Problem(id="c", prompt="Q")], 1)  # auto: no demand
    only_later = LabellerSection.model_validate({"schedule": [
        {"source": "self_consistency", "pair_strategy": "one_random"},
        {"source": "reference", "pair_strategy": "one_random"}]})
    check_sources("math", only_later, bare, iterations=1)  # the reference iteration never runs
