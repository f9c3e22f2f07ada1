import glob
import subprocess
import sys

import pytest
import yaml

from pfrl.cli import main
from pfrl.config import ConfigError, PfrlConfig, load_config

PRESETS = sorted(glob.glob("configs/*.yaml"))


def test_presets_exist():
    names = {p.split("/")[-1] for p in PRESETS}
    assert {"tiny-math.yaml", "tiny-code.yaml", "math-7b.yaml", "code-7b.yaml", "multinode-math.yaml"} <= names


@pytest.mark.parametrize("path", PRESETS)
def test_every_preset_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, PfrlConfig)
    # The resolved config round-trips through YAML unchanged.
    assert PfrlConfig.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg


def test_overrides_are_typed_yaml_values():
    cfg = load_config("configs/tiny-math.yaml", ["learner.lr=3e-5", "generator.stop=[a, b]", "metrics.port=null"])
    assert cfg.learner.lr == 3e-5
    assert cfg.generator.stop == ["a", "b"]
    assert cfg.metrics.port is None


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["learner.lr=abc"], "learner.lr"),
        (["learner.nope=1"], "learner.nope: unknown key"),
        (["nosection.x=1"], "nosection: unknown key"),
        (["buffer.max_policy_lag=-1"], "buffer.max_policy_lag"),
        (["learner"], "expected section.key=value"),
        (["labeller.pair_strategy=margin"], "margin applies to run.task=code"),
    ],
)
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("configs/tiny-math.yaml", overrides)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  seed: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ invalid YAML"):
        load_config(bad)


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--config", "configs/tiny-math.yaml", "--set", "learner.beta=0.5", "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["learner"]["beta"] == 0.5
    assert printed["sync"]["bucket_mb"] == 64.0  # a schema default, filled in
    assert printed["sync"]["shm_ring"] is True and printed["sync"]["shm_slots"] == 4


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--config", "configs/missing.yaml"], "configs/missing.yaml: config file not found"),
        (["--config", "configs/tiny-math.yaml", "--set", "learner.lr=abc"], "learner.lr"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(argv, fragment):
    proc = subprocess.run(
        [sys.executable, "-m", "pfrl.cli", "train", *argv, "--dry-run"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr


def test_a_step_larger_than_the_buffer_is_rejected_naming_both_keys():
    """A full step would never fit in the buffer, so only an iteration's tail would ever train."""
    import pytest

    from pfrl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"learner.pairs_per_step \(64\) exceeds buffer.capacity \(32\)"):
        load_config(None, ["learner.pairs_per_step=64", "buffer.capacity=32"])
    load_config(None, ["sync.every_steps=5", "buffer.max_policy_lag=0"])  # any sync interval is valid now
