"""Program extraction from model text, and output normalisation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pfrl.feedback.code import extract_program, normalize_output, outputs_match
from pfrl.tasks.synthetic_code import generate

names = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
prose = st.text(alphabet=st.sampled_from(list("abcdefghij klmnop.,\n")), max_size=40)


@given(names, st.integers(-99, 99), prose)
def test_fenced_python_block(name, k, tail):
    body = f"def {name}(x):\n    return x + {k}\n"
    assert extract_program(f"```python\n{body}```{tail}") == body


@given(names, prose)
def test_last_python_block_wins_over_other_languages(name, prose_text):
    text = (
        f"{prose_text}\n```python\ndef {name}(x):\n    return 1\n```\n```bash\nrm -rf /\n```\n"
        f"```python\ndef {name}(x):\n    return 2\n```"
    )
    assert extract_program(text) == f"def {name}(x):\n    return 2\n"


@given(names)
def test_block_cut_by_token_limit_is_kept(name):
    assert extract_program(f"```python\ndef {name}(x):\n    return (x") == f"def {name}(x):\n    return (x\n"


def test_only_foreign_blocks_or_prose_gives_none():
    assert extract_program("```bash\necho hi\n```") is None
    assert extract_program("I would write a function here, sorry.") is None
    assert extract_program("") is None


def test_unfenced_code_that_compiles():
    assert extract_program("print(int(input()) * 2)") == "print(int(input()) * 2)\n"


def test_synthetic_solutions_extract():
    for problem, solution in generate(50, seed=3):
        program = extract_program(solution)
        assert program is not None and f"def {problem.entry_point}(" in program


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
    )
)
def test_json_outputs_compare_by_value(value):
    import json

    compact = json.dumps(value, separators=(",", ":"))
    spaced = json.dumps(value, indent=1)
    assert outputs_match(compact, spaced, function_call=True)


def test_stdin_outputs_ignore_trailing_whitespace_only():
    assert outputs_match("1 2 \n3\n\n", "1 2\n3", function_call=False)
    assert not outputs_match("1  2", "1 2", function_call=False)
    assert normalize_output("[1, 2]", function_call=True) == "[1,2]"
    assert normalize_output("not json", function_call=True) == "not json"
