"""TRL's online DPO trainer, run by `pfrl bench e2e` as the alternative a user would pick.

`python -m pfrl.bench.trl_online SPEC.json RESULT.json` runs in its own process (so its start-up
is timed like `pfrl train`'s): `trl.experimental.online_dpo.OnlineDPOTrainer` (trl 1.16, the
`bench` extra) on the same model and rendered prompts, sampling 2 completions per prompt with HF
`generate` and scoring them with pfrl's answer check against the records' answers (the same score
`labeller.source=ground_truth` trains pfrl on). One prompt gives one pair, so `pairs_per_update`
prompts per optimizer step train as many pairs as pfrl's `learner.pairs_per_step`.

RESULT.json holds epoch times (`train_begin`, one per update), completion tokens generated, the
seconds spent generating and scoring (the learner waits through both: TRL's loop is serial), and
the directory the final model is saved to.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _problems(spec: dict[str, Any]) -> list:
    from pfrl.types import Problem

    return [Problem(id=p["id"], prompt=p["prompt"], answer=p["answer"]) for p in spec["problems"]]


def _answer_reward(problems: list):
    """A TRL reward function: 1.0 where pfrl's answer check finds a completion correct, else 0.0."""
    from pfrl.evaluation import Scorer

    by_id = {p.id: p for p in problems}
    scorer = Scorer("math")

    def answer_correct(prompts, completions, problem_id, **_: Any) -> list[float]:
        return [float(scorer.judge(by_id[pid], [c])[0][1]) for pid, c in zip(problem_id, completions, strict=True)]

    return answer_correct


def _trainer_class():
    """OnlineDPOTrainer that times its generation and scoring, the phases its learner waits through."""
    from trl.experimental.online_dpo import OnlineDPOTrainer

    class TimedOnlineDPOTrainer(OnlineDPOTrainer):
        wait_s = 0.0
        completion_tokens = 0

        def _generate(self, *args, **kwargs):
            start = time.perf_counter()
            out = super()._generate(*args, **kwargs)
            self.wait_s += time.perf_counter() - start
            self.completion_tokens += int(out[3].sum())  # completion_mask, up to and including EOS
            return out

        def _calculate_rewards_from_functions(self, *args, **kwargs):
            start = time.perf_counter()
            out = super()._calculate_rewards_from_functions(*args, **kwargs)
            self.wait_s += time.perf_counter() - start
            return out

    return TimedOnlineDPOTrainer


def _update_clock():
    from transformers import TrainerCallback

    class UpdateClock(TrainerCallback):
        def __init__(self) -> None:
            self.train_begin = 0.0
            self.updates: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.train_begin = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            self.updates.append(time.time())

    return UpdateClock()


def _config(spec: dict[str, Any], out_dir: Path):
    import torch
    from trl.experimental.online_dpo import OnlineDPOConfig

    return OnlineDPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=spec["pairs_per_update"], gradient_accumulation_steps=1,
        max_steps=spec["updates"], learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=spec["grad_clip"], beta=spec["beta"], max_new_tokens=spec["max_tokens"],
        max_length=spec["max_length"], temperature=spec["temperature"], top_p=spec["top_p"], seed=spec["seed"],
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), bf16=False, dataloader_num_workers=0,
    )


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(spec["out_dir"])
    problems = _problems(spec)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"])
    data = Dataset.from_dict({"prompt": [p.prompt for p in problems], "problem_id": [p.id for p in problems]})
    clock = _update_clock()
    trainer = _trainer_class()(
        model=model, reward_funcs=_answer_reward(problems), args=_config(spec, out_dir), train_dataset=data,
        processing_class=tokenizer, callbacks=[clock],
    )
    trainer.train()
    final = out_dir / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    return {"train_begin": clock.train_begin, "updates": clock.updates, "completion_tokens": trainer.completion_tokens,
            "wait_s": trainer.wait_s, "final": str(final), "pairs_per_update": spec["pairs_per_update"]}


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    result = run(json.loads(Path(spec_path).read_text()))
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
