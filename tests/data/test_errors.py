"""Bad input gives one-line DataErrors that name the bad thing and the fix."""

import os

import numpy as np
import pytest
import webdataset as wds
from shard_ids import epoch_ids, id_image, id_role

from trd.data import DataError, build_loader, ensure_role_shards


def raises_one_line(match, call, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_shards_name_the_pattern_and_make_shards(tmp_path):
    role = id_role(tmp_path, [5, 5])
    role["train"] = str(tmp_path / "nowhere" / "train-{000000..000003}.tar")
    message = raises_one_line("missing", build_loader, role, "train", 2, train=True)
    assert role["train"] in message and "launch/make_shards.py" in message and "4 of 4" in message
    raises_one_line("missing", ensure_role_shards, role)


def test_partly_missing_shards_are_reported(tmp_path):
    role = id_role(tmp_path, [5, 5, 5])
    os.remove(tmp_path / "train" / "train-000001.tar")
    message = raises_one_line("1 of 3 shards", build_loader, role, "train", 2, train=True)
    assert "train-000001.tar" in message


def truncate(path, keep_fraction=0.6):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep_fraction)])


def test_truncated_tar_names_the_shard(tmp_path):
    role = id_role(tmp_path, [6, 6, 6])
    bad = str(tmp_path / "train" / "train-000001.tar")
    truncate(bad)
    message = raises_one_line("corrupt or truncated", build_loader, role, "train", 2, train=True)
    assert bad in message and "skip_corrupt" in message


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_corrupt_skips_a_truncated_shard_and_counts_it(tmp_path, num_workers):
    role = id_role(tmp_path, [6, 6, 6])
    truncate(str(tmp_path / "train" / "train-000001.tar"))
    with pytest.warns(UserWarning, match="train-000001.tar"):
        loader = build_loader(role, "train", 3, train=True, skip_corrupt=True, num_workers=num_workers)
    assert loader.corrupt_skipped == 1 and loader.num_samples == 12
    ids = sum(epoch_ids(loader), [])
    assert sorted(ids) == list(range(6)) + list(range(12, 18))


def write_raw_shard(path, samples):
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)


def raw_role(tmp_path, samples, num_classes=5):
    (tmp_path / "raw").mkdir(exist_ok=True)
    write_raw_shard(tmp_path / "raw" / "train-000000.tar", samples)
    write_raw_shard(tmp_path / "raw" / "test-000000.tar", [{"__key__": "t0", "png": id_image(0), "cls": 0}])
    return {"train": str(tmp_path / "raw" / "train-000000.tar"), "test": str(tmp_path / "raw" / "test-000000.tar"),
            "num_classes": num_classes, "image_size": 8, "augment": False}


def good(i, cls=None):
    return {"__key__": f"k{i:03d}", "png": id_image(i), "cls": i % 5 if cls is None else cls}


def test_label_out_of_range_names_shard_key_label_and_num_classes(tmp_path):
    role = raw_role(tmp_path, [good(0), good(1), good(2, cls=7), good(3)])
    message = raises_one_line("outside", build_loader, role, "train", 2, train=True)
    assert "label 7" in message and "'k002'" in message and "train-000000.tar" in message and "[0, 5)" in message
    assert "num_classes" in message


def test_negative_label_is_out_of_range(tmp_path):
    role = raw_role(tmp_path, [good(0), good(1, cls=-1)])
    raises_one_line("label -1", build_loader, role, "train", 2, train=True)


@pytest.mark.parametrize(
    "broken, reason",
    [
        ({"__key__": "k001", "png": id_image(1)}, "no 'cls'"),
        ({"__key__": "k001", "cls": 1, "txt": "caption"}, "no image"),
        ({"__key__": "k001", "png": id_image(1), "cls": "dog"}, "not an integer"),
    ],
)
def test_malformed_samples_are_errors_or_skipped(tmp_path, broken, reason):
    role = raw_role(tmp_path, [good(0), broken, good(2), good(3)])
    message = raises_one_line(reason, build_loader, role, "train", 2, train=True)
    assert "'k001'" in message and "train-000000.tar" in message
    with pytest.warns(UserWarning, match=reason):
        loader = build_loader(role, "train", 3, train=False, skip_corrupt=True)
    assert loader.corrupt_skipped == 1 and loader.num_samples == 3
    assert sorted(sum(epoch_ids(loader), [])) == [0, 2, 3]


@pytest.mark.filterwarnings("ignore:.*splitting by sample")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_undecodable_image_found_while_streaming(tmp_path, num_workers):
    samples = [good(0), good(1), {"__key__": "k002", "png": b"\x89PNG\r\n\x1a\n garbage", "cls": 2}, good(3)]
    role = raw_role(tmp_path, samples)
    loader = build_loader(role, "train", 2, train=False, num_workers=num_workers)
    with pytest.raises(DataError, match="'k002'.*cannot be decoded") as info:
        list(loader)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    loader = build_loader(role, "train", 2, train=False, num_workers=num_workers, skip_corrupt=True)
    with pytest.warns(UserWarning, match="k002"):
        ids = sum(epoch_ids(loader), [])
    assert sorted(ids) == [0, 1, 3] and loader.corrupt_skipped == 1
    with pytest.warns(UserWarning, match="k002"):
        ids = sum(epoch_ids(loader), [])
    assert loader.corrupt_skipped == 2


@pytest.mark.parametrize(
    "change, match",
    [
        ({"num_classes": None}, "num_classes is missing"),
        ({"fraction": 1.5}, r"fraction=1.5 is out of range: it must be in \(0, 1\]"),
        ({"fraction": 0}, r"fraction=0 is out of range"),
        ({"mean": [0.5, 0.5]}, r"mean=\[0.5, 0.5\] has 2 values"),
        ({"embedded": "no_such_set"}, "unknown embedded dataset 'no_such_set'"),
    ],
)
def test_bad_role_nodes(tmp_path, change, match):
    role = {**id_role(tmp_path, [4]), **change}
    raises_one_line(match, build_loader, role, "train", 2, train=True)


def test_bad_arguments(tmp_path):
    role = id_role(tmp_path, [4])
    raises_one_line("unknown split 'val'", build_loader, role, "val", 2, train=True)
    raises_one_line("rank=2", build_loader, role, "train", 2, train=True, rank=2, world_size=2)
    raises_one_line("batch_size=0", build_loader, role, "train", 0, train=True)
    loader = build_loader(role, "train", 2, train=True)
    raises_one_line("start_step=3", loader.iter_from, 3)
    raises_one_line("train loaders", build_loader(role, "test", 2, train=False).iter_from, 1)


def test_shard_without_usable_samples(tmp_path):
    role = raw_role(tmp_path, [])
    raises_one_line("no usable samples", build_loader, role, "train", 2, train=True)
    assert np.isscalar(0)


def test_duplicate_keys_in_a_shard(tmp_path):
    role = raw_role(tmp_path, [good(0), good(1), good(2), {**good(3), "__key__": "k001"}])
    message = raises_one_line("duplicate key", build_loader, role, "train", 2, train=True)
    assert "'k001'" in message and "unique key" in message
    with pytest.warns(UserWarning, match="duplicate key"):
        loader = build_loader(role, "train", 2, train=False, skip_corrupt=True)
    assert sorted(sum(epoch_ids(loader), [])) == [0, 1, 2] and loader.corrupt_skipped == 1
