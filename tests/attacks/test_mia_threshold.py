"""Threshold fitting, held-out evaluation, and balancing of members vs non-members."""

import numpy as np
import pytest

from trd.attacks import AttackResult, balanced, threshold_attack
from trd.attacks.features import SampleOutputs
from trd.attacks.mia import attack_halves, best_threshold


def test_best_threshold_on_a_non_separable_example():
    members = [0.9, 0.8, 0.6, 0.3]
    nonmembers = [0.7, 0.2, 0.1, 0.05]
    # Cutting below 0.3 catches every member and lets only 0.7 through: (4/4 + 3/4) / 2.
    threshold, accuracy = best_threshold(members, nonmembers)
    assert accuracy == pytest.approx(0.875)
    assert threshold == pytest.approx(0.25)


def test_best_threshold_on_a_separable_example_sits_between_the_groups():
    threshold, accuracy = best_threshold([3.0, 4.0, 5.0], [-1.0, 0.0, 1.0])
    assert accuracy == 1.0
    assert threshold == pytest.approx(2.0)


def test_best_threshold_without_signal_calls_nobody_a_member():
    threshold, accuracy = best_threshold([1.0, 2.0], [1.0, 2.0])
    assert accuracy == 0.5
    assert threshold == np.inf


def test_threshold_attack_on_separable_scores():
    result = threshold_attack(np.arange(10.0) + 20.0, np.arange(10.0), seed=3)
    assert isinstance(result, AttackResult)
    assert result.accuracy == 1.0
    assert result.auc == 1.0
    assert 9.0 < result.threshold < 20.0


def test_threshold_attack_on_identical_scores_is_chance():
    result = threshold_attack(np.ones(20), np.ones(20))
    assert result.accuracy == 0.5
    assert result.auc == 0.5


def test_threshold_attack_evaluates_the_fitted_threshold_on_the_held_out_half():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.5, 1.0, 31), rng.normal(0.0, 1.0, 27)
    result = threshold_attack(members, nonmembers, seed=11)
    (m_fit, m_eval), (n_fit, n_eval) = attack_halves(31, 27, seed=11)
    assert not set(m_fit) & set(m_eval) and len(m_fit) + len(m_eval) == 31
    assert not set(n_fit) & set(n_eval) and len(n_fit) + len(n_eval) == 27
    threshold, _ = best_threshold(members[m_fit], nonmembers[n_fit])
    assert result.threshold == threshold
    expected = (np.mean(members[m_eval] >= threshold) + np.mean(nonmembers[n_eval] < threshold)) / 2
    assert result.accuracy == pytest.approx(expected)


def test_held_out_accuracy_is_not_inflated_like_the_same_data_best_threshold():
    # With no signal at all, the best threshold on the same 40 + 40 scores looks like an attack;
    # its accuracy on the held-out half averages to chance.
    rng = np.random.default_rng(0)
    optimistic, held_out = [], []
    for seed in range(200):
        members, nonmembers = rng.normal(size=40), rng.normal(size=40)
        optimistic.append(best_threshold(members, nonmembers)[1])
        held_out.append(threshold_attack(members, nonmembers, seed=seed).accuracy)
    assert np.mean(optimistic) > 0.55
    assert np.mean(held_out) == pytest.approx(0.5, abs=0.015)


def test_threshold_attack_rejects_non_finite_or_too_few_scores():
    with pytest.raises(ValueError, match="non-finite"):
        threshold_attack([1.0, np.nan, 2.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=">= 2"):
        threshold_attack([1.0], [0.0, 1.0])


def outputs(n: int, offset: float = 0.0) -> SampleOutputs:
    logits = np.arange(2 * n, dtype=np.float64).reshape(n, 2) + offset
    return SampleOutputs(logits=logits, labels=np.zeros(n, dtype=np.int64), loss=np.arange(n) + offset)


def test_balanced_subsamples_the_larger_set_deterministically():
    members, nonmembers = outputs(100), outputs(37, offset=1000.0)
    m1, n1 = balanced(members, nonmembers, seed=5)
    m2, n2 = balanced(members, nonmembers, seed=5)
    assert len(m1) == len(n1) == 37
    np.testing.assert_array_equal(m1.loss, m2.loss)
    np.testing.assert_array_equal(n1.loss, nonmembers.loss)
    # A sample keeps its rows together and the subset keeps the original order.
    np.testing.assert_array_equal(m1.logits[:, 0], 2 * m1.loss)
    assert np.all(np.diff(m1.loss) > 0)
    m3, _ = balanced(members, nonmembers, seed=6)
    assert not np.array_equal(m1.loss, m3.loss)
    m4, n4 = balanced(outputs(10), outputs(30, offset=1000.0), seed=0)
    assert len(m4) == len(n4) == 10


def test_balanced_rejects_an_empty_side():
    with pytest.raises(ValueError):
        balanced(outputs(3), outputs(0), seed=0)
