"""One-vs-rest combination (paper 004 section 4.4) with calibration fitted on validation data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from models import OneVsRest, OvrCalibration, create_model, fit_ovr_calibration, ovr_probabilities

FER2013_PRIORS = np.array([4953, 547, 5121, 8989, 6077, 4002, 6198], dtype=float)


def _synthetic_heads(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary heads as paper 004 trains them: each on a balanced "k vs rest" set, so each logit is the true
    log-odds shifted by its own prior, then distorted by a per-head scale and offset (different nets and
    training runs); returns (binary logits, labels, true posteriors)."""
    rng = np.random.default_rng(seed)
    k = len(FER2013_PRIORS)
    prior = FER2013_PRIORS / FER2013_PRIORS.sum()
    logits = 1.5 * rng.standard_normal((n, k)) + np.log(prior)
    post = np.exp(logits - logits.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in post])
    p = np.clip(post, 1e-6, 1 - 1e-6)
    balanced = np.log(p / (1 - p)) - np.log(prior / (1 - prior))
    heads = np.random.default_rng(0)  # the same K trained heads score the validation and the test faces
    scale = np.exp(heads.uniform(np.log(0.4), np.log(2.5), k))
    offset = heads.uniform(-1.0, 1.0, k)
    return balanced * scale + offset, labels, post


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def test_identity_calibration_is_the_plain_concatenation() -> None:
    z, _, _ = _synthetic_heads(500, seed=1)
    probs = ovr_probabilities(z)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
    assert (probs.argmax(1) == z.argmax(1)).all()


def test_calibration_fitted_on_validation_closes_the_gap() -> None:
    z_val, y_val, _ = _synthetic_heads(4000, seed=2)
    z_test, y_test, post_test = _synthetic_heads(4000, seed=3)
    calibration = fit_ovr_calibration(z_val, y_val)

    raw, calibrated = ovr_probabilities(z_test), ovr_probabilities(z_test, calibration)
    bayes = (post_test.argmax(1) == y_test).mean()
    acc_raw = (raw.argmax(1) == y_test).mean()
    acc_cal = (calibrated.argmax(1) == y_test).mean()
    assert acc_cal > acc_raw + 0.03  # uncalibrated heads lose several points, as in paper 004 Table 20
    assert acc_cal > bayes - 0.015  # calibrated: close to the best any combiner can do
    assert _nll(calibrated, y_test) < _nll(raw, y_test) - 0.1

    # Per-head temperatures alone cannot undo the balanced-training priors: the offsets are what matter.
    temperature_only = fit_ovr_calibration(z_val, y_val, fit_bias=False)
    np.testing.assert_array_equal(temperature_only.bias, 0.0)
    assert (ovr_probabilities(z_test, temperature_only).argmax(1) == y_test).mean() < acc_cal - 0.03


def test_inputs_may_be_torch_tensors() -> None:
    z, y, _ = _synthetic_heads(300, seed=4)
    a = fit_ovr_calibration(torch.from_numpy(z).float(), torch.from_numpy(y), max_iter=50)
    b = fit_ovr_calibration(z.astype(np.float32), y, max_iter=50)
    np.testing.assert_allclose(a.scale, b.scale, rtol=1e-6)
    np.testing.assert_allclose(ovr_probabilities(torch.from_numpy(z), a), ovr_probabilities(z, b), rtol=1e-6)


@pytest.mark.parametrize(
    ("logits", "labels"),
    [(np.zeros((4, 3)), np.array([0, 1, 3, 0])), (np.zeros((4, 3)), np.zeros(5)), (np.zeros(4), np.zeros(4))],
)
def test_fit_rejects_bad_arrays(logits: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        fit_ovr_calibration(logits, labels)


def test_module_combines_binary_models_with_stored_calibration(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("one_vs_rest", num_classes=3, base={"arch": "cnn_simple", "kwargs": {}}).eval()
    assert isinstance(model, OneVsRest) and len(model.heads) == 3
    x = torch.randn(5, 1, 48, 48)
    with torch.no_grad():
        assert all(head(x).shape == (5, 1) for head in model.heads)
        z = model.binary_logits(x)
    calibration = OvrCalibration(np.array([0.5, 2.0, 1.0]), np.array([0.3, -0.2, 0.0]), 0.7)
    model.set_calibration(calibration)
    with torch.no_grad():
        combined = torch.softmax(model(x), dim=1).double().numpy()
    np.testing.assert_allclose(combined, ovr_probabilities(z, calibration), rtol=1e-5, atol=1e-6)

    save_file(model.state_dict(), str(tmp_path / "ovr.safetensors"))
    rebuilt = create_model("one_vs_rest", num_classes=3, base={"arch": "cnn_simple", "kwargs": {}})
    rebuilt.load_state_dict(load_file(str(tmp_path / "ovr.safetensors")))
    restored = rebuilt.calibration()
    np.testing.assert_allclose(restored.scale, calibration.scale, rtol=1e-6)
    np.testing.assert_allclose(restored.bias, calibration.bias, rtol=1e-6, atol=1e-7)
    assert restored.temperature == pytest.approx(calibration.temperature)


def test_one_vs_rest_needs_two_classes() -> None:
    with pytest.raises(ValueError):
        create_model("one_vs_rest", num_classes=1)
