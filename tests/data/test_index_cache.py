"""The (key, cls) index sidecar: written under $TRD_CACHE, reused, invalidated by changes."""

import glob
import json
import os

import pytest
from shard_ids import id_role, write_id_shards

import trd.data.index as index_module
from trd.data import build_loader


def index_files(cache):
    return glob.glob(os.path.join(cache, "index", "*.json"))


def test_index_is_cached_and_reused(tmp_path, monkeypatch):
    role = id_role(tmp_path / "data", [5, 6, 7])
    build_loader(role, "train", 2, train=True)
    files = index_files(os.environ["TRD_CACHE"])
    assert len(files) == 1
    blob = json.load(open(files[0]))
    assert [len(s["keys"]) for s in blob["shards"]] == [5, 6, 7]
    assert blob["shards"][1]["labels"] == [i % 5 for i in range(5, 11)]

    def must_not_run(url):
        raise AssertionError(f"re-indexed {url}")

    monkeypatch.setattr(index_module, "index_shard", must_not_run)
    assert build_loader(role, "train", 2, train=True).num_samples == 18


def test_a_changed_shard_is_re_indexed(tmp_path):
    role = id_role(tmp_path / "data", [5, 6])
    assert build_loader(role, "train", 2, train=True).num_samples == 11
    write_id_shards(tmp_path / "data" / "train", [5, 9])
    stamp = os.stat(tmp_path / "data" / "train" / "train-000001.tar").st_mtime_ns
    os.utime(tmp_path / "data" / "train" / "train-000001.tar", ns=(stamp + 10**9, stamp + 10**9))
    assert build_loader(role, "train", 2, train=True).num_samples == 14


def test_unwritable_cache_only_costs_re_indexing(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("TRD_CACHE", str(blocker))
    role = id_role(tmp_path / "data", [4])
    assert build_loader(role, "train", 2, train=True).num_samples == 4


def test_default_cache_dir_is_under_home(monkeypatch):
    monkeypatch.delenv("TRD_CACHE")
    monkeypatch.setenv("HOME", "/some/home")
    assert index_module.cache_dir() == "/some/home/.cache/trd"


@pytest.mark.parametrize("compression", ["gz"])
def test_compressed_shards_are_indexed_and_read(tmp_path, compression):
    import webdataset as wds
    from shard_ids import epoch_ids, id_image

    for split in ("train", "test"):
        with wds.TarWriter(str(tmp_path / f"{split}.tar.{compression}")) as sink:
            for i in range(6):
                sink.write({"__key__": f"{i}", "png": id_image(i), "cls": i % 2})
    role = {"train": str(tmp_path / f"train.tar.{compression}"), "test": str(tmp_path / f"test.tar.{compression}"),
            "num_classes": 2, "image_size": 8, "augment": False}
    loader = build_loader(role, "train", 3, train=False)
    assert loader.num_samples == 6 and epoch_ids(loader) == [[0, 1, 2], [3, 4, 5]]
