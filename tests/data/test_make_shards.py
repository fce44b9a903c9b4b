"""make_shards on tiny files in the exact on-disk layouts of the raw datasets, read back through build_loader."""

import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from trd.data import DataError, build_loader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "launch", "make_shards.py")


def make_shards_main():
    spec = importlib.util.spec_from_file_location("make_shards_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_cli(*args) -> int:
    return make_shards_main()(list(args))


def loaded_pairs(out, num_classes, image_size, split):
    meta = json.load(open(os.path.join(out, "meta.json")))
    role = {"train": meta["splits"]["train"]["pattern"], "test": meta["splits"]["test"]["pattern"],
            "num_classes": num_classes, "image_size": image_size, "mean": 0.0, "std": 1.0}
    loader = build_loader(role, split, 4, train=False)
    pairs = []
    for images, labels in loader:
        pixels = (images * 255).round().to(dtype=__import__("torch").uint8).permute(0, 2, 3, 1).numpy()
        pairs.extend(zip(pixels, labels.tolist()))
    return meta, pairs


def assert_round_trip(pairs, images, labels):
    """Every loaded (image, label) is one of the originals with its own label, each exactly once."""
    by_pixels = {img.tobytes(): int(lab) for img, lab in zip(images, labels)}
    assert len(pairs) == len(images)
    assert Counter(by_pixels[p.tobytes()] for p, _ in pairs) == Counter(int(l) for l in labels)
    assert all(by_pixels[p.tobytes()] == label for p, label in pairs)
    assert len({p.tobytes() for p, _ in pairs}) == len(images)


def random_images(rng, n, size):
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def chw_rows(images):
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def dump(path, blob):
    with open(path, "wb") as f:
        pickle.dump(blob, f)


def test_cifar10(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "raw" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_images, train_labels = [], []
    for b in range(1, 6):
        images, labels = random_images(rng, 3, 32), rng.integers(0, 10, 3).tolist()
        dump(folder / f"data_batch_{b}", {b"batch_label": f"training batch {b} of 5".encode(), b"labels": labels,
                                           b"data": chw_rows(images), b"filenames": [b"x.png"] * 3})
        train_images.append(images)
        train_labels += labels
    test_images, test_labels = random_images(rng, 4, 32), [3, 1, 4, 1]
    dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": test_labels, b"data": chw_rows(test_images)})
    dump(folder / "batches.meta", {b"label_names": [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()],
                                   b"num_cases_per_batch": 3, b"num_vis": 3072})
    out = str(tmp_path / "c10")
    assert run_cli("cifar10", "--root", str(tmp_path / "raw"), "--out", out, "--maxcount", "4") == 0
    meta, pairs = loaded_pairs(out, 10, 32, "train")
    assert meta["num_classes"] == 10 and meta["classes"][0] == "airplane"
    assert meta["splits"]["train"] == {"pattern": f"{out}/train-{{000000..000003}}.tar", "shards": 4, "samples": 15, "stale": []}
    assert_round_trip(pairs, np.concatenate(train_images), train_labels)
    _, pairs = loaded_pairs(out, 10, 32, "test")
    assert [label for _, label in pairs] == test_labels  # test order is kept
    assert_round_trip(pairs, test_images, test_labels)


def test_cifar100_with_str_keys_as_python2_pickles_load(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    splits = {}
    for split, n in (("train", 7), ("test", 3)):
        images, fine = random_images(rng, n, 32), rng.integers(0, 100, n).tolist()
        # Official files decode to str keys (latin1); re-packed ones to bytes keys. Use str here.
        dump(folder / split, {"filenames": ["a"] * n, "batch_label": split, "fine_labels": fine,
                              "coarse_labels": [0] * n, "data": chw_rows(images)})
        splits[split] = (images, fine)
    dump(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": ["c"] * 20})
    out = str(tmp_path / "c100")
    # --root may also be the dataset folder itself.
    assert run_cli("--dataset", "cifar100", "--root", str(folder), "--out", out) == 0
    for split, (images, fine) in splits.items():
        meta, pairs = loaded_pairs(out, 100, 32, split)
        assert_round_trip(pairs, images, fine)
    assert meta["splits"]["train"]["pattern"] == f"{out}/train-000000.tar" and meta["classes"][99] == "class99"


def test_svhn_maps_label_10_to_digit_0(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(2)
    expected = {}
    for split, digits in (("train", [10, 1, 2, 3, 10, 9]), ("test", [5, 10, 7])):
        images = random_images(rng, len(digits), 32)
        scipy_io.savemat(str(tmp_path / f"{split}_32x32.mat"),
                         {"X": images.transpose(1, 2, 3, 0), "y": np.array(digits, dtype=np.uint8).reshape(-1, 1)})
        expected[split] = (images, [d % 10 for d in digits])
    out = str(tmp_path / "svhn")
    assert run_cli("svhn", "--root", str(tmp_path), "--out", out, "--maxcount", "2") == 0
    for split, (images, labels) in expected.items():
        meta, pairs = loaded_pairs(out, 10, 32, split)
        assert_round_trip(pairs, images, labels)
    assert meta["splits"]["train"]["shards"] == 3 and 0 in [label for _, label in pairs]


def test_stl10_column_major_images_and_one_based_labels(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    expected = {}
    for split, labels in (("train", [1, 10, 5]), ("test", [2, 2])):
        images = random_images(rng, len(labels), 96)
        # Stored per channel column by column: raw[n, c, x, y] = image[n, y, x, c].
        images.transpose(0, 3, 2, 1).tofile(str(folder / f"{split}_X.bin"))
        np.array(labels, dtype=np.uint8).tofile(str(folder / f"{split}_y.bin"))
        expected[split] = (images, [l - 1 for l in labels])
    (folder / "class_names.txt").write_text("\n".join("airplane bird car cat deer dog horse monkey ship truck".split()))
    out = str(tmp_path / "stl")
    assert run_cli("stl10", "--root", str(tmp_path), "--out", out) == 0
    for split, (images, labels) in expected.items():
        meta, pairs = loaded_pairs(out, 10, 96, split)
        assert_round_trip(pairs, images, labels)
    assert meta["classes"][2] == "car"
    # An asymmetric image proves the orientation: transposed pixels would not match.
    assert not np.array_equal(expected["train"][0][0], expected["train"][0][0].transpose(1, 0, 2))


def save_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def test_imagefolder_tree(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "folder"
    classes = ["zebra", "ant", "moose"]  # sorted: ant=0, moose=1, zebra=2
    expected = {"train": ([], []), "test": ([], [])}
    for split, folder, per_class in (("train", "train", 3), ("test", "val", 2)):
        for name in classes:
            for i in range(per_class):
                image = random_images(rng, 1, 12)[0]
                save_png(str(root / folder / name / f"{i}.png"), image)
                expected[split][0].append(image)
                expected[split][1].append(sorted(classes).index(name))
    out = str(tmp_path / "shards")
    assert run_cli("imagefolder", "--root", str(root), "--out", out, "--maxcount", "4") == 0
    for split, (images, labels) in expected.items():
        meta, pairs = loaded_pairs(out, 3, 12, split)
        assert_round_trip(pairs, np.stack(images), labels)
    assert meta["classes"] == ["ant", "moose", "zebra"]


def test_imagefolder_val_missing_a_class_keeps_train_indices(tmp_path):
    root = tmp_path / "folder"
    for name, value in (("a", 10), ("b", 20), ("c", 30)):
        save_png(str(root / "train" / name / "0.png"), np.full((4, 4, 3), value, np.uint8))
    save_png(str(root / "val" / "c" / "0.png"), np.full((4, 4, 3), 30, np.uint8))
    out = str(tmp_path / "shards")
    assert run_cli("imagefolder", "--root", str(root), "--out", out) == 0
    _, pairs = loaded_pairs(out, 3, 4, "test")
    assert [label for _, label in pairs] == [2]


def jpeg_bytes(colour):
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), colour, np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_tinyimagenet_val_layout_gets_train_class_indices(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n09999999", "n01443537", "n04067472"]  # sorted order: n01443537, n04067472, n09999999
    colour = {w: c for w, c in zip(wnids, ([200, 30, 30], [30, 200, 30], [30, 30, 200]))}
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(2):
            (root / "train" / w / "images" / f"{w}_{i}.JPEG").write_bytes(jpeg_bytes(colour[w]))
    (root / "val" / "images").mkdir(parents=True)
    annotations = []
    for i, w in enumerate(["n04067472", "n09999999", "n01443537", "n09999999", "n04067472"]):
        (root / "val" / "images" / f"val_{i}.JPEG").write_bytes(jpeg_bytes(colour[w]))
        annotations.append(f"val_{i}.JPEG\t{w}\t0\t0\t15\t15")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    (root / "wnids.txt").write_text("\n".join(wnids))
    out = str(tmp_path / "tin")
    assert run_cli("imagefolder", "--root", str(root), "--tinyimagenet", "--out", out, "--maxcount", "2") == 0
    index = {w: i for i, w in enumerate(sorted(wnids))}
    for split, count in (("train", 6), ("test", 5)):
        meta, pairs = loaded_pairs(out, 3, 16, split)
        assert len(pairs) == count
        for pixels, label in pairs:
            wnid = sorted(wnids)[label]
            assert np.abs(pixels[8, 8].astype(int) - colour[wnid]).max() <= 8, (split, label)
    assert [label for _, label in pairs] == [index[w] for w in ["n04067472", "n09999999", "n01443537", "n09999999", "n04067472"]]
    assert meta["classes"] == sorted(wnids)


def test_embedded_cli_prints_a_role_node(tmp_path):
    out = str(tmp_path / "synth")
    result = subprocess.run([sys.executable, SCRIPT, "--dataset", "embedded", "--name", "synth_tiny", "--out", out],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"train: {out}/train-{{000000..000001}}.tar" in result.stdout
    assert "num_classes: 4" in result.stdout and "embedded: synth_tiny" in result.stdout
    role = {"train": f"{out}/train-{{000000..000001}}.tar", "test": f"{out}/test-{{000000..000001}}.tar",
            "num_classes": 4, "image_size": 32}
    assert build_loader(role, "train", 4, train=False).num_samples == 48


def test_missing_raw_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert run_cli("cifar10", "--root", str(tmp_path), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "batches.meta" in err and "download=True" in err
    assert run_cli("stl10", "--root", str(tmp_path), "--out", str(tmp_path / "o")) == 2
    assert "stl10_binary" in capsys.readouterr().err
    assert run_cli("imagefolder", "--root", str(tmp_path), "--tinyimagenet", "--out", str(tmp_path / "o")) == 2
    assert "val_annotations.txt" in capsys.readouterr().err
    from trd.data.sources import make_shards

    with pytest.raises(DataError, match="needs --name"):
        make_shards("embedded", out=str(tmp_path / "o"))
