"""Pseudo feedback: labelling sampled solutions without human labels.

answers.py         final-answer extraction and bounded math equivalence (math)
code.py            program extraction from markdown and output comparison (code)
sandbox.py         running model-written programs under isolation, pooled
self_consistency.py majority answers (math) and multi-test-case pseudo outputs (code)
pairs.py           seeded chosen/rejected pair strategies and DPO pair rows
labeller.py        one group in, one LabelledGroup out (math or code, reference or self-consistency)
frontier.py        OpenAI-compatible client writing references, test inputs and reference programs
"""
