"""``part``: deterministic, disjoint slices of one train split (after ``fraction``)."""

import pytest
from test_fraction import imbalanced_role, selected_ids

from trd.data import DataError
from trd.data.role import sub_part


def test_disjoint_parts_partition_the_split_and_are_deterministic(tmp_path):
    whole = set(selected_ids(imbalanced_role(tmp_path)))
    a = selected_ids(imbalanced_role(tmp_path, part=[0.0, 0.8]))
    b = selected_ids(imbalanced_role(tmp_path, part=[0.8, 1.0]))
    assert len(a) == 120 and len(b) == 30
    assert set(a).isdisjoint(b) and set(a) | set(b) == whole
    assert selected_ids(imbalanced_role(tmp_path, part=[0.0, 0.8])) == a
    other_seed = selected_ids(imbalanced_role(tmp_path, part=[0.0, 0.8], part_seed=1))
    assert set(other_seed) != set(a)


def test_part_slices_what_fraction_kept(tmp_path):
    kept = set(selected_ids(imbalanced_role(tmp_path, fraction=0.5)))
    head = selected_ids(imbalanced_role(tmp_path, fraction=0.5, part=[0.0, 0.5]))
    tail = selected_ids(imbalanced_role(tmp_path, fraction=0.5, part=[0.5, 1.0]))
    assert set(head) | set(tail) == kept and set(head).isdisjoint(tail)


def test_part_leaves_the_test_split_whole(tmp_path):
    from trd.data import build_loader

    role = imbalanced_role(tmp_path, part=[0.0, 0.1])
    assert build_loader(role, "test", 4, train=False).num_samples == 20


@pytest.mark.parametrize("part, message", [([0.5, 0.5], "must be \\[a, b\\] with 0 <= a < b <= 1"),
                                           ([0.2], "must be \\[a, b\\]"),
                                           ([0.5, 1.5], "out of range"),
                                           ([0.0, 0.001], "is empty: widen the slice")])
def test_bad_or_empty_parts_are_one_line_errors(tmp_path, part, message):
    with pytest.raises(DataError, match=message):
        selected_ids(imbalanced_role(tmp_path, part=part))


def test_a_part_of_a_part_is_one_slice():
    assert sub_part([0.0, 0.8], [0.75, 1.0]) == pytest.approx([0.6, 0.8])
    assert sub_part(None, [0.0, 0.2]) == [0.0, 0.2]


@pytest.mark.parametrize("part", [None, [0.2, 1.0]])
def test_holdout_leaves_every_train_read_and_is_the_validation_role(tmp_path, part):
    from trd.data.role import validation_role

    role = imbalanced_role(tmp_path, part=part)
    whole = set(selected_ids(role))
    trained = selected_ids({**role, "holdout": 0.2})
    held_out = selected_ids(validation_role({**role, "holdout": 0.2}))
    assert set(trained).isdisjoint(held_out) and set(trained) | set(held_out) == whole
    assert len(held_out) == pytest.approx(0.2 * len(whole), abs=1)


def test_a_role_without_holdout_has_no_validation_role(tmp_path):
    from trd.data.role import validation_role

    with pytest.raises(ValueError, match="set its holdout"):
        validation_role(imbalanced_role(tmp_path))
