"""`pfrl bench prefixes`: the audit's counting on hand-built rollouts, and its reference solutions."""

import json
from dataclasses import asdict

from pfrl.bench.prefixes import PrefixAudit, _references
from pfrl.bootstrap import BootstrapSpec, make_splits
from pfrl.types import PreferencePair, PrefixBatch, PrefixRollout, PrefixValues, Problem, PromptItem

REFERENCE = " 3 + 4 = 7. 7 - 2 = 5. The answer is \\boxed{5}."


def _rollout(label: str, texts: list[str]) -> PrefixRollout:
    item = PromptItem(Problem(id="p", prompt="Q", answer="5"), 0)
    batch = PrefixBatch(item, label, [1], [[2]], 8, 3, 0)
    return PrefixRollout(batch, [[i] for i in range(len(texts))], texts, [[] for _ in texts], 0, 0)


def _pair(chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair("p", "Q", chosen, rejected, 0, chosen_complete=False, rejected_complete=False)


def test_audit_counts_pairs_by_correctness_and_label():
    audit = PrefixAudit()
    right, wrong = " 3 + 4 = 7.", " 3 + 4 = 8."
    # A right label: the correct prefix is good, the wrong one bad: the pair is the right way round.
    audit.add(_rollout("5", [right, wrong]), PrefixValues("p", [3, 0]), [_pair(right, wrong)], REFERENCE, "5", 0.75)
    # A wrong majority label (6): the correct prefix's continuations reach 5, so it is valued 0.
    audit.add(_rollout("6", [right, wrong]), PrefixValues("p", [0, 1]), [_pair(wrong, right)], REFERENCE, "5", 0.5)
    s = audit.summary()
    assert (s["groups"], s["wrong_label_groups"], s["pairs"]) == (2, 1, 2)
    assert (s["right_way"], s["inverted"], s["pairs_from_wrong_labels"]) == (1, 1, 1)
    assert s["by_kind"] == {"chosen_ok/rejected_bad/label_right": 1, "chosen_bad/rejected_ok/label_wrong": 1}
    assert s["values_correct_prefix"] == {0: 1, 3: 1} and s["values_wrong_prefix"] == {0: 1, 1: 1}
    assert s["by_vote_share"] == {"0.5": {"right_way": 0, "inverted": 1, "pairs": 1},
                                  "0.75": {"right_way": 1, "inverted": 0, "pairs": 1}}


def test_references_regenerate_the_bootstraps_train_split(tmp_path):
    spec = BootstrapSpec.small()
    (tmp_path / "pfrl_bootstrap.json").write_text(json.dumps({"task": "math", "seed": 2, "spec": asdict(spec)}))
    _, train, _ = make_splits("math", 2, spec)
    got = _references(tmp_path, 5)
    assert got == train[:5] and all(s.endswith(f"\\boxed{{{p.answer}}}.") for p, s in got)
