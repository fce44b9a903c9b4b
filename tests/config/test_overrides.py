"""Command-line mistakes whose Hydra message does not say the fix get trd's one-line message instead, before
anything is planned or written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trd.config import ConfigError
from trd.config.overrides import check_keys, check_syntax

REPO = Path(__file__).resolve().parents[2]
CONFIGS = str(REPO / "configs")


def test_an_unquoted_brace_pattern_names_the_quoted_form():
    with pytest.raises(ConfigError) as err:
        check_syntax(["+exp=demo", "data.source.train=/d/train-{000000..000003}.tar"])
    message = str(err.value)
    assert "quote the pattern" in message
    assert """data.source.train="'/d/train-{000000..000003}.tar'\"""" in message


def test_the_quoted_form_and_sweeps_pass():
    check_syntax(["data.source.train='/d/train-{000000..000003}.tar'", "dispose.lam=0.1,0.5", "-m"])


def test_a_key_written_without_plus_names_the_keys_allowed_there():
    with pytest.raises(ConfigError) as err:
        check_keys(["+exp=demo", "dispose.lamda=0.5,0.7"], CONFIGS, "config")
    assert str(err.value).startswith("unknown config key dispose.lamda: dispose takes ")
    assert "lam," in str(err.value) and "temperature" in str(err.value)
    check_keys(["+exp=demo", "dispose.lam=0.5"], CONFIGS, "config")  # known keys pass
    check_keys(["+exp=demo", "+dispose.lamda=0.5"], CONFIGS, "config")  # with +: the schema refuses it later


@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("data.source.train=/d/train-{000000..000003}.tar", "quote the pattern"),
    ("dispose.lamda=0.5", "unknown config key dispose.lamda: dispose takes "),
    ("dispose.lam=1.5", "dispose.lam=1.5 is out of range: it must be in [0, 1]"),
    ("data.target.fraction=0.5", "data.target.fraction is not set in the config (it takes its default), so Hydra "
                                 "needs a + to set it: +data.target.fraction=0.5"),
    ("+data.target.fraction=2", "data.target.fraction=2 is out of range: it must be in (0, 1]"),
    ("piggyback.schemes.finetune.optim.warmup_steps=5", "+piggyback.schemes.finetune.optim.warmup_steps=5"),
])
def test_submit_refuses_with_one_line_and_writes_nothing(tmp_path, override, message):
    proc = subprocess.run([sys.executable, "launch/submit.py", "+exp=demo", f"out_root={tmp_path}/out", override],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"TRD_DATA": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("trd: error: ") and message in last
    assert not (tmp_path / "out").exists()
