"""`pfrl bench prefixes`: are step-level pDPO's prefix pairs the right way round? (tiny math task)

Step-level pDPO (pfrl/feedback/steps.py) values a prefix by how many of its continuations reach the
group's label. On self-consistency labels that label is the majority vote, which is sometimes
wrong; then a correct prefix's continuations reach the true answer, not the label, and the correct
prefix is valued 0 ("bad"). This bench measures how often that happens, on a bootstrap model and
its train records, through the real path: the GeneratorEngine samples the groups, the math labeller
labels them (`labeller.source`, default self_consistency), the engine completes the chosen
prefixes, `prefix_values` and `prefix_pairs` make the pairs. Ground truth is used for the audit
only: a prefix is correct when the bootstrap's reference solution of the problem starts with it
(the synthetic problems are regenerated from the bootstrap's seed and spec), a label when it equals
the record's answer.

Prints the pairs by (chosen correct, rejected correct, label right) and the value of correct and
wrong prefixes; `--json OUT` writes the counts.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfrl.bench.report import add_json_argument, write_json
from pfrl.commands import add_config_args
from pfrl.types import PreferencePair, PrefixRollout, PrefixValues


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="A `pfrl bootstrap --task math` directory (model + data/); "
                   "default: the preset's tiny math model, built into model.bootstrap_dir when missing.")
    p.add_argument("--problems", type=int, default=300, help="Train problems to sample (default 300).")
    p.add_argument("--source", default="self_consistency", choices=["self_consistency", "ground_truth"],
                   help="Label source of the groups (default self_consistency).")
    add_config_args(p, "Preset for sampling and labelling.", "configs/tiny-math.yaml")
    add_json_argument(p)


@dataclass
class PrefixAudit:
    """Counts over the audited groups (pure: filled by `add`, tested on hand-built rollouts)."""

    # (chosen correct, rejected correct, label right, the group's vote share or None) -> pairs
    pairs: Counter = field(default_factory=Counter)
    values: dict[bool, Counter] = field(default_factory=lambda: {True: Counter(), False: Counter()})
    shares: set[float | None] = field(default_factory=set)  # of every audited group, pairs or not
    groups: int = 0
    wrong_label_groups: int = 0

    def add(self, rollout: PrefixRollout, values: PrefixValues, pairs: list[PreferencePair],
            reference: str, answer: str, vote_share: float | None = None) -> None:
        label_right = rollout.batch.label == answer
        self.groups += 1
        self.wrong_label_groups += not label_right
        for text, value in zip(rollout.prefix_texts, values.values, strict=True):
            self.values[reference.startswith(text)][value] += 1
        share = None if vote_share is None else round(vote_share, 3)
        self.shares.add(share)
        for pair in pairs:
            self.pairs[(reference.startswith(pair.chosen), reference.startswith(pair.rejected), label_right, share)] += 1

    def summary(self) -> dict[str, Any]:
        items = list(self.pairs.items())
        kinds: Counter = Counter()
        for (c, r, ok, _), n in items:
            kinds[(c, r, ok)] += n
        shares = sorted(self.shares, key=lambda v: v or 0.0)
        return {
            "groups": self.groups, "wrong_label_groups": self.wrong_label_groups, **_tally(items),
            "pairs_from_wrong_labels": sum(n for (_, _, ok, _), n in items if not ok),
            "by_kind": {f"chosen_{'ok' if c else 'bad'}/rejected_{'ok' if r else 'bad'}/label_{'right' if ok else 'wrong'}": n
                        for (c, r, ok), n in sorted(kinds.items(), reverse=True)},
            "values_correct_prefix": dict(sorted(self.values[True].items())),
            "values_wrong_prefix": dict(sorted(self.values[False].items())),
            "by_vote_share": {str(v): _tally([(k, n) for k, n in items if k[3] == v]) for v in shares},
        }


def _tally(items: list[tuple[tuple, int]]) -> dict[str, int]:
    """Pairs with a correct chosen over a wrong rejected prefix, the reverse, and all of them."""
    return {"right_way": sum(n for (c, r, *_), n in items if c and not r),
            "inverted": sum(n for (c, r, *_), n in items if r and not c),
            "pairs": sum(n for _, n in items)}


def _references(model: Path, n: int) -> list[tuple[Any, str]]:
    """The first `n` train problems of a bootstrap, with their reference solutions (regenerated)."""
    from dataclasses import fields

    from pfrl.bootstrap import BootstrapSpec, make_splits
    from pfrl.tasks.synthetic_math import MathDifficulty

    meta = json.loads((model / "pfrl_bootstrap.json").read_text())
    spec_dict = {f.name: meta["spec"][f.name] for f in fields(BootstrapSpec) if f.name in meta["spec"]}
    spec_dict["math_difficulty"] = MathDifficulty(**spec_dict["math_difficulty"])
    spec_dict.pop("code_difficulty", None)
    _, train, _ = make_splits("math", meta["seed"], BootstrapSpec(**spec_dict))
    return train[:n]


def _sample(cfg: Any, model: str, problems: list[Any], source: str) -> list[tuple[Any, PrefixRollout]]:
    """Through the engine and the math labeller: the labelled groups that pDPO would value, with
    the engine's completions of their prefixes."""
    from pfrl.feedback.answers import AnswerJudge
    from pfrl.feedback.math_label import label_math
    from pfrl.feedback.pairs import PairRule
    from pfrl.feedback.steps import prefix_batch, wants_prefixes
    from pfrl.generation import GeneratorEngine
    from pfrl.types import PromptItem

    judge = AnswerJudge(cfg.labeller.verify_timeout_s)
    rule = PairRule.of(cfg.labeller, cfg.labeller.plan(1).pair_strategy, source)
    engine = GeneratorEngine(model, cfg.generator, cfg.model, cfg.sync, seed=cfg.run.seed)
    try:
        print(f"sampling {len(problems)} problems x {cfg.generator.n_samples}", flush=True)
        groups = engine.generate([PromptItem(p, 0) for p in problems])
        labelled = [(g, label_math(g, source, rule, judge, cfg.labeller, cfg.run.seed)) for g in groups]
        held = [(g, r) for g, r in labelled if wants_prefixes(g, r, len(r.pairs), 1.0)]
        print(f"{len(held)} groups kept with pairs; completing their prefixes", flush=True)
        rollouts = engine.complete_prefixes([prefix_batch(g, r, cfg.labeller.step_pairs) for g, r in held])
    finally:
        engine.shutdown()
    return [(r, rollout) for (_, r), rollout in zip(held, rollouts, strict=True)]


def audit(args: argparse.Namespace) -> PrefixAudit:
    from pfrl.config import load_config
    from pfrl.feedback.answers import AnswerJudge
    from pfrl.feedback.math_label import prefix_values
    from pfrl.feedback.pairs import pair_rng
    from pfrl.feedback.steps import max_prefix_pairs, prefix_pairs
    from pfrl.preflight import resolve_model

    model = args.model or resolve_model(load_config(args.config, ["run.task=math", *args.overrides]))
    cfg = load_config(args.config, [*args.overrides, f"model.path={model}", "labeller.step_pairs.ratio=1.0"])
    train = _references(Path(model), args.problems)
    refs = {p.id: (solution, p.answer) for p, solution in train}
    judge, out = AnswerJudge(cfg.labeller.verify_timeout_s), PrefixAudit()
    for result, rollout in _sample(cfg, model, [p for p, _ in train], args.source):
        values = prefix_values(rollout, judge)
        cap = max_prefix_pairs(1.0, len(result.pairs))
        pairs = prefix_pairs(rollout, values, cap, pair_rng(cfg.run.seed, result.prompt_id))
        out.add(rollout, values, pairs, *refs[result.prompt_id], vote_share=result.vote_share)
    return out


def run(args: argparse.Namespace) -> int:
    summary = audit(args).summary()
    total = max(1, summary["pairs"])
    print(f"\nprefix pairs: {summary['pairs']} from {summary['groups']} groups "
          f"({summary['wrong_label_groups']} with a wrong label)")
    print(f"  right way round (chosen correct, rejected wrong): {summary['right_way']} ({summary['right_way'] / total:.2f})")
    print(f"  inverted (chosen wrong, rejected correct):         {summary['inverted']} ({summary['inverted'] / total:.2f})")
    print(f"  from groups with a wrong label:                    {summary['pairs_from_wrong_labels']} "
          f"({summary['pairs_from_wrong_labels'] / total:.2f})")
    for kind, n in summary["by_kind"].items():
        print(f"    {kind}: {n}")
    print(f"  value of correct prefixes {summary['values_correct_prefix']}, of wrong ones {summary['values_wrong_prefix']}")
    for share, n in summary["by_vote_share"].items():
        print(f"  groups with vote share {share}: {n['pairs']} pairs, {n['right_way']} right way round, {n['inverted']} inverted")
    write_json(args.json_out, "prefixes", {"source": args.source, "problems": args.problems, **summary})
    return 0
