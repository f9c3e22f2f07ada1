"""Overrides that shrink a preset to a short CI run (real vLLM, DeepSpeed, Ray on CPU).

The `--small` bootstrap model is weak, so the run labels with the records'
answers (source ground_truth, named: the baseline source) and samples 8 per prompt: enough pairs for several steps per iteration."""


def short_run(model: str, run_dir, *extra: str) -> list[str]:
    return [
        f"model.path={model}",
        f"run.dir={run_dir}",
        "run.iterations=2",
        "data.prompts_per_iteration=24",
        "generator.n_samples=8",
        "generator.max_tokens=48",
        "generator.prompts_per_request=8",
        "learner.pairs_per_step=2",
        "learner.micro_batch_pairs=2",
        "labeller.source=ground_truth",
        "learner.lr=1e-4",
        "checkpoint.every_steps=2",
        "metrics.eval_every_steps=4",
        "metrics.eval_prompts=16",
        "metrics.tensorboard=true",
        "labeller.min_vote_share=0.25",
        *extra,
    ]
