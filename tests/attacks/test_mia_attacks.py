"""Every attack is at chance without membership signal and clearly above it against a memorising model."""

import numpy as np
import pytest

from trd.attacks import classifier_attack, gradient_norm_attack, run_all
from trd.attacks.features import SampleOutputs
from trd.attacks.mia import output_attack_features

ALL_ATTACKS = {"loss", "confidence", "entropy", "modified_entropy", "classifier", "gradient_norm"}
# The entropy ignores the label, so a confident wrong prediction on a non-member looks like a member.
LABEL_FREE = {"entropy"}


def test_no_attack_beats_chance_when_members_and_non_members_are_iid(same_distribution_outputs):
    members, nonmembers = same_distribution_outputs
    results = run_all(members, nonmembers, seed=0)
    assert set(results) == ALL_ATTACKS
    for name, result in results.items():
        assert result["acc"] == pytest.approx(0.5, abs=0.06), name
        assert result["auc"] == pytest.approx(0.5, abs=0.06), name


def test_every_attack_detects_the_training_set_of_a_memorising_model(overfit_outputs):
    members, nonmembers = overfit_outputs
    results = run_all(members, nonmembers, seed=0)
    assert set(results) == ALL_ATTACKS
    for name, result in results.items():
        assert result["acc"] > 0.65, (name, result)
        assert result["auc"] > (0.65 if name in LABEL_FREE else 0.75), (name, result)


def test_run_all_balances_and_skips_the_gradient_attack_without_gradient_norms(overfit_outputs):
    members, nonmembers = overfit_outputs
    black_box = [SampleOutputs(o.logits, o.labels, o.loss) for o in (members, nonmembers)]
    results = run_all(black_box[0], black_box[1].subset(np.arange(60)), seed=1)
    assert set(results) == ALL_ATTACKS - {"gradient_norm"}
    with pytest.raises(ValueError, match="grad_norms"):
        gradient_norm_attack(*black_box)


def test_classifier_attack_is_deterministic_and_separates_separable_features():
    rng = np.random.default_rng(0)
    members = confident_outputs(rng, 40, correct=True)
    nonmembers = confident_outputs(rng, 40, correct=False)
    first = classifier_attack(members, nonmembers, seed=4)
    assert first == classifier_attack(members, nonmembers, seed=4)
    assert first.accuracy == 1.0 and first.auc == 1.0 and first.threshold is None


def confident_outputs(rng, n: int, correct: bool) -> SampleOutputs:
    """Outputs whose prediction is confidently right (or wrong) about the label."""
    labels = rng.integers(0, 3, size=n)
    predicted = labels if correct else (labels + 1) % 3
    logits = rng.normal(0.0, 0.1, size=(n, 3))
    logits[np.arange(n), predicted] += 6.0
    loss = -(logits[np.arange(n), labels] - np.log(np.exp(logits).sum(axis=1)))
    return SampleOutputs(logits=logits, labels=labels, loss=loss)


def test_output_attack_features_are_finite_for_extreme_logits():
    logits = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]])
    labels = np.array([1, 2])
    loss = np.array([2e4, np.log(3.0)])
    features = output_attack_features(SampleOutputs(logits=logits, labels=labels, loss=loss))
    assert features.shape[0] == 2 and np.all(np.isfinite(features))
