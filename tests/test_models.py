"""Tests for the model registry and the FER architectures in ``models``."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from models import create_model, list_models, register_model
from models.registry import _MODEL_REGISTRY

IMG = 48
BATCH = 4


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny batches: one intra-op thread is as fast and avoids oversubscription when the machine is busy.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_list_models_sorted_and_complete() -> None:
    names = list_models()
    assert names == sorted(names)
    assert {"mini_xception", "mini_xception_a", "vgg_fer11"} <= set(names)


@pytest.mark.parametrize("name", list_models())
def test_model_contract(name: str) -> None:
    """Shapes, finiteness, gradients and channels_last for 7/8 classes and 1/3 input channels."""
    for num_classes in (7, 8):
        for in_chans in (1, 3):
            model = create_model(name, num_classes=num_classes, in_chans=in_chans)
            assert isinstance(model, nn.Module)
            x = torch.randn(BATCH, in_chans, IMG, IMG)

            model.train()
            out = model(x)
            assert out.shape == (BATCH, num_classes)
            assert torch.isfinite(out).all()
            out.logsumexp(dim=1).mean().backward()  # loss that reaches every logit
            for pname, p in model.named_parameters():
                assert p.grad is not None, f"{name}: no grad for {pname}"
                assert torch.isfinite(p.grad).all(), f"{name}: non-finite grad for {pname}"

            # channels_last: same eval output as contiguous, and a training step works.
            model.eval()
            with torch.no_grad():
                ref = model(x)
            model_cl = model.to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                out_cl = model_cl(x_cl)
            torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-5)
            model_cl.train()
            model_cl.zero_grad(set_to_none=True)
            out_cl = model_cl(x_cl)
            assert out_cl.shape == (BATCH, num_classes)
            out_cl.logsumexp(dim=1).mean().backward()
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model_cl.parameters())


@pytest.mark.parametrize("name", list_models())
def test_dropout_kwarg(name: str) -> None:
    model = create_model(name, dropout=0.3)
    assert any(isinstance(m, nn.Dropout | nn.Dropout2d) and m.p == 0.3 for m in model.modules())
    model.eval()
    x = torch.randn(2, 1, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # dropout inactive in eval mode


@pytest.mark.parametrize("name", list_models())
def test_onnx_export_matches_torch(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    for num_classes, in_chans in ((7, 1), (8, 3)):
        model = create_model(name, num_classes=num_classes, in_chans=in_chans)
        # Give BatchNorm non-trivial running statistics so the eval graph is exercised for real.
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(8, in_chans, IMG, IMG))
        model.eval()
        x = torch.randn(BATCH, in_chans, IMG, IMG)
        path = tmp_path / f"{name}_{num_classes}_{in_chans}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter DeprecationWarning
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for batch in (BATCH, 1):
            xb = x[:batch]
            with torch.no_grad():
                expected = model(xb).numpy()
            (got,) = sess.run(["logits"], {"input": xb.numpy()})
            assert got.shape == (batch, num_classes)
            assert np.abs(got - expected).max() <= 1e-4, f"{name}: onnxruntime differs from torch"
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6)  # logits can be small at init


def test_param_counts() -> None:
    n_mx = _n_params(create_model("mini_xception", num_classes=7))
    assert n_mx == 56_951  # reference Keras mini_XCEPTION: 58,423 incl. 1,472 BN moving statistics
    assert 50_000 <= n_mx <= 70_000

    n_a = _n_params(create_model("mini_xception_a", num_classes=7))
    assert n_a == 585_151
    assert abs(n_a - 600_000) / 600_000 < 0.05  # paper 000: "approximately 600,000"

    n_vgg = _n_params(create_model("vgg_fer11", num_classes=7))
    assert n_vgg == 1_468_839
    assert abs(n_vgg - 1_460_000) / 1_460_000 <= 0.02  # paper 000: "close to 1,460,000"
    assert _n_params(create_model("vgg_fer11", num_classes=8)) == 1_468_839 + 129


def test_width_multiplier() -> None:
    small = _n_params(create_model("mini_xception", width=0.5))
    base = _n_params(create_model("mini_xception"))
    assert small < base < _n_params(create_model("mini_xception", width=2.0))
    assert _n_params(create_model("mini_xception", width=3.5)) == _n_params(create_model("mini_xception_a"))


@pytest.mark.parametrize("size", [32, 64, 96])
def test_vgg_input_size_agnostic(size: int) -> None:
    model = create_model("vgg_fer11").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 7)


def test_unknown_model_raises_listing_available() -> None:
    with pytest.raises(ValueError) as excinfo:
        create_model("no_such_model")
    msg = str(excinfo.value)
    assert "no_such_model" in msg
    for name in list_models():
        assert name in msg


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"in_chans": 0}, {"dropout": 1.0}])
def test_invalid_arguments(kwargs: dict) -> None:
    for name in list_models():
        with pytest.raises(ValueError):
            create_model(name, **kwargs)


def test_register_model_decorator() -> None:
    def _test_dummy_model(num_classes: int = 7, in_chans: int = 1, **kwargs) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    try:
        assert register_model(_test_dummy_model) is _test_dummy_model
        assert "_test_dummy_model" in list_models()
        assert isinstance(create_model("_test_dummy_model", num_classes=3), nn.Module)

        def clash() -> nn.Module:
            return nn.Identity()

        clash.__name__ = "_test_dummy_model"
        with pytest.raises(ValueError, match="already registered"):
            register_model(clash)
    finally:
        _MODEL_REGISTRY.pop("_test_dummy_model", None)
    assert "_test_dummy_model" not in list_models()


def test_models_package_does_not_import_search_or_data_pipeline() -> None:
    code = (
        "import sys, models; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('search', 'data_pipeline')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
