"""data.train_file / heldout_file as JSONL, parquet and `hf:` data sets, with a field mapping.

No hub is reachable here: `hf:` is tested on a local data set directory through the real
`datasets.load_dataset`, and on a hub-style name through a stand-in that records the arguments.
"""

from __future__ import annotations

import json

import pytest

from pfrl.errors import UserError
from pfrl.tasks.loaders import load_problems, parse_hf_source

ROWS = [
    {"question": "What is 2 + 3?", "solution": "5", "topic": "add"},
    {"question": "What is 7 - 4?", "solution": "3", "topic": "sub"},
    {"question": "What is 2 * 6?", "solution": "12", "topic": "mul"},
]
FIELDS = {"prompt": "question", "answer": "solution"}


def _write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def test_parquet_with_field_mapping_numbers_rows_without_ids(tmp_path):
    loaded = load_problems(_write_parquet(tmp_path / "p.parquet", ROWS), FIELDS)
    assert [(p.id, p.prompt, p.answer) for p in loaded.problems] == [
        ("1", "What is 2 + 3?", "5"), ("2", "What is 7 - 4?", "3"), ("3", "What is 2 * 6?", "12")]


def test_jsonl_with_field_mapping_keeps_its_own_ids_and_eval_tests(tmp_path):
    rows = [{"id": f"r{i}", **r, "eval_tests": "assert True"} for i, r in enumerate(ROWS)]
    loaded = load_problems(_write_jsonl(tmp_path / "p.jsonl", rows), FIELDS)
    assert [p.id for p in loaded.problems] == ["r0", "r1", "r2"]
    assert loaded.problems[1].prompt == "What is 7 - 4?" and loaded.problems[1].eval_tests == "assert True"


def test_hf_local_dataset_directory_through_load_dataset(tmp_path, hf_cache):
    data = tmp_path / "myset"
    data.mkdir()
    _write_jsonl(data / "train.jsonl", ROWS)
    _write_jsonl(data / "test.jsonl", ROWS[:1])
    loaded = load_problems(f"hf:{data}:test", FIELDS)
    assert [(p.id, p.answer) for p in loaded.problems] == [("1", "5")]
    assert len(load_problems(f"hf:{data}:train", FIELDS).problems) == 3


def test_hf_hub_name_passes_name_config_split_to_load_dataset(monkeypatch):
    """A stand-in for the unreachable hub: checks the arguments, returns rows."""
    import datasets

    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": "q?", "answer": "x #### 7"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_problems("hf:openai/gsm8k:main:test", {"prompt": "question"})
    assert calls == [("openai/gsm8k", "main", "test")] and loaded.problems[0].answer == "x #### 7"
    load_problems("hf:someone/set:train", {"prompt": "question"})
    assert calls[-1] == ("someone/set", None, "train")


def test_hf_source_syntax():
    assert parse_hf_source("hf:a/b:c:d") == ("a/b", "c", "d")
    for bad in ("hf:a", "hf:a:b:c:d", "hf::train"):
        with pytest.raises(UserError, match="expected hf:NAME"):
            parse_hf_source(bad)


def test_hf_unreachable_is_one_line(tmp_path, hf_cache):
    with pytest.raises(UserError) as e:
        load_problems(f"hf:{tmp_path / 'nothing-here'}:train", FIELDS)
    assert str(e.value).startswith(f"hf:{tmp_path / 'nothing-here'}:train: cannot load") and "\n" not in str(e.value)


def test_bad_parquet_rows_are_named_by_row(tmp_path):
    rows = ROWS + [{"question": "   ", "solution": "1", "topic": "x"}]
    path = _write_parquet(tmp_path / "p.parquet", rows)
    with pytest.raises(UserError, match=r"p.parquet: row 4: empty prompt \(1 bad of 4 rows\)"):
        load_problems(path, FIELDS)
    loaded = load_problems(path, FIELDS, max_bad=0.3)  # within the allowance: skipped and counted
    assert len(loaded.problems) == 3 and loaded.bad == [(4, "empty prompt")]


def test_unmapped_column_and_unknown_field_are_user_errors(tmp_path):
    path = _write_parquet(tmp_path / "p.parquet", ROWS)
    with pytest.raises(UserError, match=r"row 1: no column 'query' \(data.fields.prompt\)"):
        load_problems(path, {"prompt": "query"})
    with pytest.raises(UserError, match="data.fields.promt: not a problem field"):
        load_problems(path, {"promt": "question"})


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(UserError, match="broken.parquet: not a readable parquet file"):
        load_problems(str(path))
    with pytest.raises(UserError, match="missing.parquet: cannot read"):
        load_problems(str(tmp_path / "missing.parquet"))


def test_cli_bad_file_exits_2_with_one_line(tmp_path, capsys):
    """`pfrl eval` on a malformed parquet file: one line naming the file and row, exit 2."""
    from pfrl.cli import main

    path = _write_parquet(tmp_path / "p.parquet", [{"question": None, "solution": "1"}])
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    rc = main(["eval", "--model", str(model), "--data", path, "--task", "math", "--set", "data.fields={prompt: question}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "p.parquet: no valid problems (row 1:" in err
