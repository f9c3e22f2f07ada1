"""Bad input ends in one line and exit 2: never a traceback, never a half-started cluster.

Property-based (hypothesis) over config values, config files and data records, each driven through
the CLI in-process (`pfrl.cli.main`): `pfrl train --dry-run` for config values, `pfrl train` up to
its preflight for data. Whatever is generated, the command either accepts it (config values only)
or answers with exactly one stderr line that names the key, file or line, and exit code 2; Ray is
never initialised and no actor is ever started.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pfrl.cli import main
from pfrl.config import PfrlConfig

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class ClusterStarted(Exception):
    """Raised by the stand-ins for the controller and Ray start: bad input got that far."""


@pytest.fixture(scope="module", autouse=True)
def no_cluster():
    """Whatever gets past the checks is stopped before any actor or Ray (and the test fails)."""
    import pfrl.training

    def started(*_args, **_kwargs):
        raise ClusterStarted

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pfrl.training, "RunSession", started)
        mp.setattr(pfrl.training, "start_ray", started)
        yield
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(rc: int, err: str, *names: str) -> str:
    assert rc == 2, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("pfrl train: error: "), err[:2000]
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, lines[0][:2000])
    return lines[0]


# -- config values ---------------------------------------------------------------------------------
def _leaf_keys(model: type[BaseModel], prefix: str = "") -> dict[str, typing.Any]:
    """Every dotted key of the schema with its annotation (sub-sections walked)."""
    keys = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys |= _leaf_keys(ann, f"{prefix}{name}.")
        else:
            keys[f"{prefix}{name}"] = ann
    return keys


KEYS = _leaf_keys(PfrlConfig)


def _has(ann: typing.Any, kind: type) -> bool:
    return ann is kind or kind in typing.get_args(ann)


FLOAT_KEYS = sorted(k for k, ann in KEYS.items() if _has(ann, float))
INT_KEYS = sorted(k for k, ann in KEYS.items() if _has(ann, int) and not _has(ann, bool))
# Where -1 is a documented value, not a mistake.
NEGATIVE_ALLOWED = {"generator.max_restarts", "labeller.max_restarts"}

NASTY_VALUES = [
    ".nan", ".inf", "-.inf", "-1", "-100", "1e400", "[]", "{}", "null", "", "'", "[[[", "{a: [1, {b: .nan}]}",
    "x" * 100_000, "[" * 5000, "!!python/object/apply:os.system [echo]", "\udcff", "a\nb: c", "\x00",
]
RAW_VALUES = st.one_of(
    st.sampled_from(NASTY_VALUES),
    st.text(max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats().map(repr),
)
ANY_KEY = st.one_of(st.sampled_from(sorted(KEYS)), st.from_regex(r"[a-z_]{1,10}(\.[a-z_]{0,10}){0,3}", fullmatch=True))


@FAST
@given(key=ANY_KEY, raw=RAW_VALUES)
@example(key="learner.adam_betas", raw="[.nan, 0.9]")
@example(key="run.seed", raw="-1")
@example(key="", raw="1")
@example(key="run..dir", raw="x")
def test_set_values_are_accepted_or_refused_in_one_line(key, raw):
    rc, out, err = run_cli(["train", "--dry-run", "--set", f"{key}={raw}"])
    if rc == 0:
        PfrlConfig.model_validate(yaml.safe_load(out))  # what it accepted is a whole, valid config
        return
    line = assert_one_line_error(rc, err)
    assert key.split(".")[0] in line


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_no_float_takes_nan_or_infinity(key):
    for raw in (".nan", ".inf", "-.inf"):
        rc, _, err = run_cli(["train", "--dry-run", "--set", f"{key}={raw}"])
        assert_one_line_error(rc, err, key)


@pytest.mark.parametrize("key", sorted(set(INT_KEYS) - NEGATIVE_ALLOWED))
def test_no_count_takes_a_negative_number(key):
    rc, _, err = run_cli(["train", "--dry-run", "--set", f"{key}=-5"])
    assert_one_line_error(rc, err, key)


YAML_TREES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(sorted(KEYS))), inner, max_size=3)
    ),
    max_leaves=8,
)
SECTION_TREES = st.dictionaries(st.sampled_from(sorted(PfrlConfig.model_fields)), YAML_TREES, min_size=1, max_size=3)


@FAST
@given(content=st.one_of(SECTION_TREES.map(lambda t: yaml.safe_dump(t).encode()), YAML_TREES.map(lambda t: yaml.safe_dump(t).encode()), st.binary(max_size=200)))
@example(content=b"run:\n  dir: \xff\xfe\n")
@example(content=b"run: {dir: [" + b"[" * 3000 + b"\n")
@example(content=b"- just\n- a list\n")
def test_config_files_are_accepted_or_refused_in_one_line(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bad.yaml"
        path.write_bytes(content)
        rc, out, err = run_cli(["train", "--dry-run", "--config", str(path)])
    if rc == 0:
        PfrlConfig.model_validate(yaml.safe_load(out))
        return
    assert_one_line_error(rc, err, str(path))


def test_an_unreadable_config_path_is_one_line(tmp_path):
    rc, _, err = run_cli(["train", "--dry-run", "--config", str(tmp_path)])  # a directory
    assert_one_line_error(rc, err, str(tmp_path))


# -- data records ----------------------------------------------------------------------------------
GOOD = {"id": "p0", "prompt": "What is 2 + 3?\nAnswer:", "answer": "5"}
WRONG_TYPES = st.one_of(
    st.lists(st.integers(), min_size=1, max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.booleans(), st.floats(allow_nan=True).filter(lambda f: f != f or abs(f) == float("inf")),
)
# Each turns a good record into a bad one (a line of bytes, as written to the file).
BAD_RECORDS = st.one_of(
    st.sampled_from(["id", "prompt"]).map(lambda k: {k2: v for k2, v in GOOD.items() if k2 != k}),
    st.tuples(st.sampled_from(["id", "prompt", "reference", "entry_point", "test_inputs", "test_outputs"]), WRONG_TYPES)
    .map(lambda kv: {**GOOD, kv[0]: kv[1]}),
    st.sampled_from(["", "   ", "\n\t"]).map(lambda p: {**GOOD, "prompt": p}),
    st.sampled_from([None, "", " "]).map(lambda i: {**GOOD, "id": i}),
    st.sampled_from([float("nan"), float("inf")]).map(lambda a: {**GOOD, "answer": a}),
    st.just({**GOOD, "prompt": "\ud800 lone surrogate"}),
    st.just({**GOOD, "test_inputs": ["1", "2"], "test_outputs": ["1"]}),
    st.just({**GOOD, "entry_point": "not an identifier"}),
    st.just({**GOOD, "id": "p1"}),  # a duplicate of the good record before it
    st.sampled_from([[1, 2], "text", 3, None]),  # not an object
).map(lambda rec: json.dumps(rec).encode())
BAD_LINES = st.one_of(
    BAD_RECORDS,
    st.binary(min_size=1, max_size=50).filter(lambda b: b.strip() and b"\n" not in b and b"\r" not in b),
    st.just(b'{"id": "x", "prompt": "\xff\xfe"}'),
    st.just(b"[" * 5000),
    st.just(b'{"id": "x", "prompt": '),
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-data")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(good_before=st.integers(1, 2), bad=BAD_LINES, good_after=st.integers(0, 2))
def test_bad_records_are_named_by_line(tiny_math_model, data_dir, good_before, bad, good_after):
    rows = [json.dumps({**GOOD, "id": f"p{i + 1}"}).encode() for i in range(good_before)]
    bad_line = len(rows) + 1
    rows += [bad] + [json.dumps({**GOOD, "id": f"q{i}"}).encode() for i in range(good_after)]
    path = data_dir / "train.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    rc, _, err = run_cli(["train", "--set", f"model.path={tiny_math_model}", "--set", f"data.train_file={path}",
                          "--set", "data.max_bad_records=0", "--set", f"run.dir={data_dir}/run"])
    assert_one_line_error(rc, err, str(path), f"line {bad_line}")


def test_prompts_longer_than_the_context_are_named(tiny_math_model, tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{**GOOD, "id": "short"}, {**GOOD, "id": "long\nid", "prompt": "1 + 2 = 3. " * 2000}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, _, err = run_cli(["train", "--set", f"model.path={tiny_math_model}", "--set", f"data.train_file={path}",
                          "--set", "data.max_bad_records=0", "--set", f"run.dir={tmp_path}/run"])
    assert_one_line_error(rc, err, str(path), "longer than the context", "long\\nid")


def test_an_empty_data_file_is_one_line(tiny_math_model, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n\n")
    rc, _, err = run_cli(["train", "--set", f"model.path={tiny_math_model}", "--set", f"data.train_file={path}",
                          "--set", f"run.dir={tmp_path}/run"])
    assert_one_line_error(rc, err, str(path), "no valid problems")


def test_a_huge_duplicate_id_gives_a_short_line(tiny_math_model, tmp_path):
    path = tmp_path / "train.jsonl"
    huge = "x" * 1_000_000
    path.write_text("".join(json.dumps({**GOOD, "id": huge}) + "\n" for _ in range(2)))
    rc, _, err = run_cli(["train", "--set", f"model.path={tiny_math_model}", "--set", f"data.train_file={path}",
                          "--set", "data.max_bad_records=0", "--set", f"run.dir={tmp_path}/run"])
    line = assert_one_line_error(rc, err, str(path), "line 2: duplicate id")
    assert len(line) < 1000
