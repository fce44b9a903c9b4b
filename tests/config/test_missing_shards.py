"""Missing shards are found at submission for every role at once, each with the make_shards.py command that
writes them (with --tinyimagenet for TinyImageNet) and the overrides that point the role at what it prints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from trd.config import ConfigError
from trd.data.urls import make_shards_command
from trd.experiment import plan_experiment

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")


def test_every_missing_role_is_named_with_its_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TRD_DATA", str(tmp_path / "data"))
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+exp=gc_tinyimagenet", f"out_root={tmp_path / 'out'}"])
    with pytest.raises(ConfigError) as info:
        plan_experiment(cfg)
    message, data = str(info.value), tmp_path / "data"
    assert message.startswith("the shards of 4 data roles are missing; create them, then submit again:")
    for role in ("data.source.train", "data.source.test", "data.target.train", "data.target.test",
                 "data.piggyback.stl10_10.train", "data.piggyback.stl10_10.test"):
        assert f"  {role}: " in message
    assert (f"python launch/make_shards.py imagefolder --root <your tiny-imagenet-200 folder> --tinyimagenet "
            f"--out {data}/tinyimagenet") in message
    assert f"python launch/make_shards.py cifar100 --root <folder holding the raw cifar100 files> --out {data}/cifar100" in message
    assert "python launch/make_shards.py stl10 --root" in message
    assert "  data.piggyback.tinyimagenet_10: the same shards as data.source" in message
    assert ("then, if it prints other patterns: data.target.train=\"'<the train pattern it prints>'\" "
            "data.target.test=\"'<the test pattern it prints>'\"") in message
    assert f"point data.root (now {data}) or the TRD_DATA variable" in message
    assert not (tmp_path / "out").exists()


def test_the_command_follows_meta_json_of_an_earlier_make_shards(tmp_path):
    out = tmp_path / "my_shards"
    out.mkdir()
    (out / "meta.json").write_text(json.dumps({"dataset": "svhn"}))
    assert make_shards_command(f"{out}/train-{{000000..000009}}.tar") == (
        f"python launch/make_shards.py svhn --root <folder holding the raw svhn files> --out {out}")
