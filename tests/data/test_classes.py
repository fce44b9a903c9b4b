"""``classes``: a role keeps some labels of its shards, in both splits, relabelled 0..k-1 in the order given,
before ``fraction`` and ``part`` apply; bad lists are one-line errors."""

import pytest
from shard_ids import image_ids
from test_fraction import LABELS, imbalanced_role

from trd.config import ConfigError
from trd.data import DataError, build_loader
from trd.data.role_config import role_config


def _labelled(role, split="train"):
    """(sample id, label the loader gives) of every sample of the split."""
    loader = build_loader(role, split, 4, train=False)
    return [(i, int(y)) for images, labels in loader for i, y in zip(image_ids(images), labels)]


def test_kept_classes_are_relabelled_in_the_order_given(tmp_path):
    role = imbalanced_role(tmp_path, classes=[4, 1], num_classes=2)
    for split in ("train", "test"):
        seen = _labelled(role, split)
        assert seen and all(LABELS[i] in (4, 1) for i, _ in seen)
        assert all(label == {4: 0, 1: 1}[LABELS[i]] for i, label in seen)
    assert len(_labelled(role)) == LABELS.count(4) + LABELS.count(1)


def test_fraction_and_part_apply_to_the_kept_classes_alone(tmp_path):
    every = {i for i, _ in _labelled(imbalanced_role(tmp_path, fraction=0.5))}
    kept = {i for i, _ in _labelled(imbalanced_role(tmp_path, fraction=0.5, classes=[2, 3], num_classes=2))}
    assert kept == {i for i in every if LABELS[i] in (2, 3)}  # each class's subset does not depend on the others
    head = {i for i, _ in _labelled(imbalanced_role(tmp_path, classes=[2, 3], num_classes=2, part=[0.0, 0.5]))}
    tail = {i for i, _ in _labelled(imbalanced_role(tmp_path, classes=[2, 3], num_classes=2, part=[0.5, 1.0]))}
    assert head.isdisjoint(tail) and len(head | tail) == LABELS.count(2) + LABELS.count(3)


@pytest.mark.parametrize("extra, message", [
    ({"classes": [1, 1], "num_classes": 2}, "must list distinct labels"),
    ({"classes": [], "num_classes": 1}, "must list distinct labels"),
    ({"classes": [0, 1, 2]}, "num_classes=5 but data.x.classes keeps 3: set num_classes: 3"),
    ({"classes": [-1], "num_classes": 1}, "out of range"),
])
def test_bad_class_lists_are_refused_at_submission(tmp_path, extra, message):
    role = imbalanced_role(tmp_path, **extra)
    with pytest.raises(ConfigError, match=message):
        role_config({"data": {"x": role}}, "x")


def test_a_class_the_shards_do_not_have_is_named(tmp_path):
    role = imbalanced_role(tmp_path, classes=[3, 7], num_classes=2)
    with pytest.raises(DataError, match=r"classes \[7\] of classes=\[3, 7\] have no sample in the train split"):
        build_loader(role, "train", 4, train=False)


def test_embedded_roles_check_their_classes_at_submission(tmp_path):
    role = {"embedded": "synth_piggyback", "train": str(tmp_path / "t-{000000..000001}.tar"),
            "test": str(tmp_path / "v-{000000..000001}.tar"), "num_classes": 2, "image_size": 32, "classes": [3, 12]}
    with pytest.raises(ConfigError, match=r"data.x.classes=\[3, 12\] but its data \(synth_piggyback\) has labels 0..9"):
        role_config({"data": {"x": role}}, "x")
    assert role_config({"data": {"x": {**role, "classes": [3, 9]}}}, "x")["classes"] == [3, 9]
    assert "classes" not in role_config({"data": {"x": {**role, "classes": None, "num_classes": 10}}}, "x")
