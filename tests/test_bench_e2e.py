"""`pfrl bench e2e`: figures from each system's own records, the ratios the JSON carries, and TRL's
online DPO trainer driven on a tiny model (slow)."""

from __future__ import annotations

import json

import pytest

from pfrl.bench.e2e import SystemFigures, pfrl_figures, separate_devices, summarise, trl_figures
from pfrl.cli import main


def _record(step: int, t: float, **extra) -> dict:
    return {"step": step, "time": t, "learner/step_s": 1.0, "learner/idle_frac": 0.1 * step, "learner/pairs": 32.0,
            "gen/tokens_per_s": 100.0 * step, "buffer/dropped_stale": step, **extra}


def _figures(name: str, wall: float, train: float, per_update: float, step_s=None, sync_ms=None) -> SystemFigures:
    return SystemFigures(name, wall, train, per_update, 1.0, 0.2, 64, 0, step_s, sync_ms, f"/runs/{name}/final")


def test_pfrl_figures_read_the_first_n_steps():
    """Steps past N (the run's last records) and records without a learner step are left out; a step
    written twice counts once (the later line, as after a resume's cut)."""
    records = [
        _record(1, 100.0, **{"sync/ms": 50.0}),
        {"step": 1, "time": 100.5, "eval/accuracy": 0.5},
        _record(2, 101.0),  # no sync in this step
        _record(3, 109.0, **{"sync/ms": 70.0}),
        _record(3, 103.0, **{"sync/ms": 90.0}),
        _record(4, 200.0, **{"sync/ms": 1.0}),
    ]
    fig = pfrl_figures("online", records, updates=3, launch=90.0, loop_start=95.0, final="/r/final")
    assert (fig.wall_s, fig.train_s, fig.s_per_update) == (13.0, 8.0, 1.5)
    assert fig.pairs_trained == 96 and fig.stale_dropped == 3
    assert fig.learner_idle_frac == pytest.approx(0.2) and fig.tokens_per_s == pytest.approx(200.0)
    assert fig.learner_idle_after_first == pytest.approx(0.25)  # steps 2 and 3: the s/update window
    assert fig.sync_ms == 70.0 and fig.step_s == 1.0


def test_a_run_that_ended_before_n_updates_is_refused():
    """Its time to fewer updates would compare unlike with unlike (seen: 200 prompts gave 7 of 10)."""
    from pfrl.errors import UserError

    with pytest.raises(UserError, match="after 2 of 3 updates"):
        pfrl_figures("online", [_record(1, 1.0), _record(2, 2.0)], updates=3, launch=0.0, loop_start=0.0, final="f")


def test_trl_figures_count_one_pair_per_prompt_and_its_waits_as_idle():
    result = {"train_begin": 100.0, "updates": [102.0, 104.0, 110.0], "completion_tokens": 500, "wait_s": 6.0,
              "final": "/t/final", "pairs_per_update": 8}
    fig = trl_figures(result, launch=90.0)
    assert (fig.wall_s, fig.train_s, fig.s_per_update) == (20.0, 10.0, 4.0)
    assert fig.pairs_trained == 24 and fig.tokens_per_s == 50.0 and fig.learner_idle_frac == 0.6


def test_ratios_are_the_others_time_over_online():
    results = {"online": _figures("online", 10.0, 8.0, 1.0), "lockstep": _figures("lockstep", 15.0, 12.0, 1.6,
                                                                                   step_s=0.5, sync_ms=100.0),
               "trl": _figures("trl", 40.0, 36.0, 4.0)}
    figures = summarise(results, updates=8, pairs_per_update=32, start_accuracy=0.3)
    assert figures["ratio_vs_trl"] == 4.0 and figures["ratio_vs_lockstep"] == 1.5
    assert figures["ratio_vs_trl_train"] == 4.5 and figures["ratio_vs_lockstep_per_update"] == 1.6
    assert figures["learner_idle_frac"] == 0.2 and figures["systems"]["trl"]["final"] == "/runs/trl/final"
    json.dumps(figures, allow_nan=False)


def test_sync_ratios_compare_each_online_system_with_lockstep():
    results = {"online": _figures("online", 10.0, 8.0, 1.0, sync_ms=40.0),
               "online_unstaged": _figures("online_unstaged", 11.0, 9.0, 1.1, sync_ms=160.0),
               "lockstep": _figures("lockstep", 15.0, 12.0, 1.6, step_s=0.5, sync_ms=20.0)}
    figures = summarise(results, updates=8, pairs_per_update=32, start_accuracy=None)
    assert figures["sync_online_vs_lockstep"] == 2.0 and figures["sync_online_unstaged_vs_lockstep"] == 8.0


def test_separate_devices_overlap_the_longer_phase():
    """Lockstep 1.6 s/update = gen+label 1.0 + learn 0.5 + sync 0.1; online on its own devices takes the
    longer of gen+label (1.0) and learn+sync (0.6) per update."""
    sep = separate_devices(_figures("lockstep", 15.0, 12.0, 1.6, step_s=0.5, sync_ms=100.0))
    assert sep is not None
    assert sep["gen_label_s"] == pytest.approx(1.0) and sep["online_s_per_update"] == pytest.approx(1.0)
    assert sep["ratio"] == pytest.approx(1.6)


@pytest.mark.parametrize("argv, word", [(["--systems", "online,verl"], "verl"), (["--updates", "1"], "--updates")])
def test_bad_arguments_are_one_line(argv, word, capsys):
    assert main(["bench", "e2e", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]


@pytest.mark.slow
def test_trl_online_dpo_runs_to_its_updates(tmp_path):
    """TRL's trainer as the bench drives it: N update times, generated tokens counted, the answer
    check as its reward, and a final model a pfrl eval can load."""
    pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM

    from pfrl.bench import trl_online
    from pfrl.tasks.synthetic_math import generate
    from pfrl.tiny import save_random_model

    pairs = generate(16, seed=0)
    model = save_random_model(tmp_path / "model", [p.prompt + s for p, s in pairs], seed=0)
    spec = {"model": str(model), "problems": [{"id": p.id, "prompt": p.prompt, "answer": p.answer} for p, _ in pairs],
            "pairs_per_update": 2, "updates": 2, "lr": 1e-4, "grad_clip": 1.0, "beta": 0.1, "max_tokens": 8,
            "max_length": 256, "temperature": 1.0, "top_p": 0.9, "seed": 0, "out_dir": str(tmp_path / "trl")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert trl_online.main([str(tmp_path / "spec.json"), str(tmp_path / "result.json")]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["updates"]) == 2 and result["train_begin"] <= result["updates"][0] <= result["updates"][1]
    assert 0 < result["completion_tokens"] <= 2 * 2 * 2 * 8 and result["wait_s"] > 0
    AutoModelForCausalLM.from_pretrained(result["final"])


def test_answer_reward_scores_with_pfrls_answer_check():
    from pfrl.bench.trl_online import _answer_reward

    reward = _answer_reward([_problem("a", "12"), _problem("b", "3")])
    scores = reward(prompts=["p", "p", "q"], completions=["so \\boxed{12}", "\\boxed{13}", "The answer is 3."],
                    problem_id=["a", "a", "b"])
    assert scores == [1.0, 0.0, 1.0]


def _problem(pid: str, answer: str):
    from pfrl.types import Problem

    return Problem(id=pid, prompt="q", answer=answer)
