"""Softmax-based per-sample scores against hand-computed float64 values."""

import math

import numpy as np
import pytest

from trd.attacks import scores


def logits_of(probs):
    return np.log(np.asarray(probs, dtype=np.float64))


def test_entropy_matches_hand_computation():
    logits = logits_of([[0.5, 0.25, 0.25], [0.7, 0.2, 0.1]])
    expected = [-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)),
                -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))]
    np.testing.assert_allclose(scores.entropy(logits), expected, rtol=1e-13)


def test_modified_entropy_matches_song_mittal_formula():
    logits = logits_of([[0.5, 0.25, 0.25], [0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    labels = np.array([0, 1, 2])
    expected = [
        -(1 - 0.5) * math.log(0.5) - 0.25 * math.log(0.75) - 0.25 * math.log(0.75),
        -(1 - 0.2) * math.log(0.2) - 0.7 * math.log(0.3) - 0.1 * math.log(0.9),
        -(1 - 0.1) * math.log(0.1) - 0.7 * math.log(0.3) - 0.2 * math.log(0.8),
    ]
    np.testing.assert_allclose(scores.modified_entropy(logits, labels), expected, rtol=1e-13)


def test_modified_entropy_is_zero_for_a_certain_correct_prediction_and_large_for_a_certain_wrong_one():
    logits = np.array([[1000.0, 0.0, 0.0], [1000.0, 0.0, 0.0]])
    right, wrong = scores.modified_entropy(logits, np.array([0, 1]))
    assert right == pytest.approx(0.0, abs=1e-300)
    # F_y = e^-1000 underflows, but log F_y comes from the log-softmax (-1000 exactly); log(1 - F_0)
    # is clamped at log(1e-30) since 1 - F_0 rounds to 0.
    assert wrong == pytest.approx(1000.0 - math.log(scores.LOG_EPS), rel=1e-12)


def test_true_class_confidence_and_log_prob_are_stable_for_extreme_logits():
    logits = np.array([[800.0, -800.0], [0.0, 0.0]])
    labels = np.array([1, 0])
    np.testing.assert_allclose(scores.true_class_log_prob(logits, labels), [-1600.0, math.log(0.5)], rtol=1e-15)
    np.testing.assert_allclose(scores.true_class_confidence(logits, labels), [0.0, 0.5], atol=1e-300)
    assert np.all(np.isfinite(scores.entropy(logits)))


def test_scores_do_not_depend_on_a_shift_of_the_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4))
    labels = rng.integers(0, 4, size=5)
    shifted = logits + 300.0
    np.testing.assert_allclose(scores.modified_entropy(shifted, labels), scores.modified_entropy(logits, labels),
                               rtol=1e-10)
    np.testing.assert_allclose(scores.entropy(shifted), scores.entropy(logits), rtol=1e-10)
