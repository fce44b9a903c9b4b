"""Embedded generated datasets: registry, determinism, concurrent generation, loading."""

import hashlib
import json
import multiprocessing
import os
from collections import Counter

import numpy as np
import pytest

from trd.data import EMBEDDED, DataError, build_loader, ensure_role_shards
from trd.data.embedded import materialize
from trd.data.synth import CLASS_UNIVERSE, NUM_PRIMITIVES, SynthTask, generate


def tiny_role(directory, **extra):
    return {"train": os.path.join(directory, "train-{000000..000002}.tar"), "test": os.path.join(directory, "test-000000.tar"),
            "num_classes": 4, "image_size": 32, "embedded": "synth_tiny", **extra}


def digest(paths):
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]


def shard_paths(directory):
    return [os.path.join(directory, f"train-{i:06d}.tar") for i in range(3)] + [os.path.join(directory, "test-000000.tar")]


def test_registry_has_the_documented_datasets_with_disjoint_classes():
    assert {"synth_source", "synth_target", "synth_piggyback", "synth_tiny"} <= set(EMBEDDED)
    classes = [set(d.task.classes) for d in EMBEDDED.values()]
    assert sum(len(c) for c in classes) == len(set().union(*classes))
    assert EMBEDDED["synth_target"].task.train_per_class < EMBEDDED["synth_source"].task.train_per_class
    # The source task uses every primitive of the bank, so its features cover what other tasks are made of.
    used = {p for c in EMBEDDED["synth_source"].task.classes for p in CLASS_UNIVERSE[c]}
    assert used == set(range(NUM_PRIMITIVES))
    assert len(set(CLASS_UNIVERSE)) == len(CLASS_UNIVERSE)


def test_the_two_groups_of_synth_split_are_made_of_disjoint_halves_of_the_primitive_bank():
    """+exp=resist_demo's beneficial classes (0-9) and malicious ones (10-19) share no primitive."""
    classes = EMBEDDED["synth_split"].task.classes
    beneficial = {p for c in classes[:10] for p in CLASS_UNIVERSE[c]}
    malicious = {p for c in classes[10:] for p in CLASS_UNIVERSE[c]}
    assert len(classes) == 20 and beneficial == set(range(9)) and malicious <= set(range(9, NUM_PRIMITIVES))


def test_generation_is_deterministic_and_seed_dependent():
    task = SynthTask(classes=(0, 1, 2), train_per_class=5, test_per_class=2, seed=9)
    images, labels = generate(task, "train")
    again, labels_again = generate(task, "train")
    assert images.shape == (15, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert Counter(labels.tolist()) == {0: 5, 1: 5, 2: 5}
    other, _ = generate(SynthTask((0, 1, 2), 5, 2, seed=10), "train")
    test, _ = generate(task, "test")
    assert not np.array_equal(images, other) and test.shape == (6, 32, 32, 3)
    big, _ = generate(task, "test", size=48)
    assert big.shape == (6, 48, 48, 3)
    assert images.std() > 20  # not blank


def test_embedded_role_is_generated_on_first_use_and_loads(tmp_path):
    role = tiny_role(tmp_path / "tiny")
    loader = build_loader(role, "train", 8, train=True)
    assert all(os.path.isfile(p) for p in shard_paths(tmp_path / "tiny"))
    assert loader.num_samples == 48 and loader.steps_per_epoch == 6
    labels = [int(y) for _, ys in loader for y in ys]
    assert Counter(labels) == {c: 12 for c in range(4)}  # one epoch of a divisible split sees every sample once
    test = build_loader(role, "test", 5, train=False)
    assert test.num_samples == 24 and sum(len(y) for _, y in test) == 24


def test_materialized_bytes_are_reproducible_and_regenerated_when_incomplete(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    ensure_role_shards(tiny_role(first))
    assert materialize("synth_tiny", shard_paths(second)[:3], shard_paths(second)[3:]) is True
    assert digest(shard_paths(first)) == digest(shard_paths(second))
    assert materialize("synth_tiny", shard_paths(second)[:3], shard_paths(second)[3:]) is False
    os.remove(shard_paths(second)[1])
    assert materialize("synth_tiny", shard_paths(second)[:3], shard_paths(second)[3:]) is True
    assert digest(shard_paths(first)) == digest(shard_paths(second))
    assert not [n for n in os.listdir(second) if ".tmp-" in n]


def _generate_at_once(directory, barrier, results):
    barrier.wait()
    paths = shard_paths(directory)
    results.put(materialize("synth_tiny", paths[:3], paths[3:]))


def test_concurrent_generation_from_two_processes(tmp_path):
    reference = tmp_path / "reference"
    ensure_role_shards(tiny_role(reference))
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_generate_at_once, args=(str(tmp_path / "shared"), barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert sorted(results.get(timeout=5) for _ in workers) == [False, True]  # exactly one generated
    assert digest(shard_paths(tmp_path / "shared")) == digest(shard_paths(reference))
    assert build_loader(tiny_role(tmp_path / "shared"), "test", 24, train=False).num_samples == 24


def test_embedded_role_with_wrong_num_classes(tmp_path):
    with pytest.raises(DataError, match="set num_classes: 4"):
        ensure_role_shards(tiny_role(tmp_path, num_classes=10))


def test_non_embedded_role_only_checks_shards(tmp_path):
    role = tiny_role(tmp_path)
    del role["embedded"]
    with pytest.raises(DataError, match="make_shards"):
        ensure_role_shards(role)


def test_shards_from_another_generator_version_are_regenerated(tmp_path):
    paths = shard_paths(tmp_path)
    assert materialize("synth_tiny", paths[:3], paths[3:]) is True
    stamp = tmp_path / ".synth_tiny.embedded.json"
    blob = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**blob, "generator_version": blob["generator_version"] - 1}))
    assert materialize("synth_tiny", paths[:3], paths[3:]) is True
    assert json.loads(stamp.read_text()) == blob
    assert materialize("synth_tiny", paths[:3], paths[3:]) is False


def test_a_users_own_shard_is_never_overwritten_when_the_role_keeps_embedded(tmp_path):
    # A user points an embedded role at their own shards and one of them is missing: trd refuses to generate
    # there (it would replace the user's files with synthetic data) and names the file.
    paths = shard_paths(tmp_path)
    ensure_role_shards(tiny_role(tmp_path / "trd"))
    for mine, theirs in zip(paths[1:], shard_paths(tmp_path / "trd")[1:]):
        with open(theirs, "rb") as src, open(mine, "wb") as dst:
            dst.write(src.read())
    before = digest(paths[1:])
    with pytest.raises(DataError, match=r"test-000000.tar is in .* and trd did not write it"):
        materialize("synth_tiny", paths[:3], paths[3:])
    assert digest(paths[1:]) == before and not os.path.exists(paths[0])


def test_a_complete_set_of_shards_trd_did_not_write_is_read_as_it_is(tmp_path):
    paths = shard_paths(tmp_path)
    ensure_role_shards(tiny_role(tmp_path / "trd"))
    for mine, theirs in zip(paths, shard_paths(tmp_path / "trd")):
        with open(theirs, "rb") as src, open(mine, "wb") as dst:
            dst.write(src.read())
    os.utime(paths[0], (1, 1))
    assert materialize("synth_tiny", paths[:3], paths[3:]) is False
    assert os.stat(paths[0]).st_mtime == 1 and not (tmp_path / ".synth_tiny.embedded.json").exists()


def test_a_foreign_file_in_the_directory_blocks_generation(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="notes.txt is in"):
        materialize("synth_tiny", shard_paths(tmp_path)[:3], shard_paths(tmp_path)[3:])
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_another_image_size_never_rewrites_a_directory_in_place(tmp_path):
    paths = shard_paths(tmp_path)
    materialize("synth_tiny", paths[:3], paths[3:], image_size=32)
    before = digest(paths)
    os.remove(paths[0])
    with pytest.raises(DataError, match="generated at 32 px; 48 px data goes to another directory"):
        materialize("synth_tiny", paths[:3], paths[3:], image_size=48)
    assert digest(paths[1:]) == before[1:]


def test_the_embedded_data_config_puts_each_image_size_in_its_own_directory():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        small = compose(config_name="config", overrides=["out_root=/x"])
        large = compose(config_name="config", overrides=["out_root=/x", "data.source.image_size=48"])
    assert "/32px/" in small.data.source.train and "/48px/" in large.data.source.train
    assert "/32px/" in large.data.target.train  # only the role whose size changed moves
