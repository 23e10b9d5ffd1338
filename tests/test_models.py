"""Tests for the model registry and the FER architectures in ``models``.

Every registered model: builds for 7/8 classes and 1/3 input channels, runs forward and backward (also in
channels_last), exports to ONNX (onnxruntime within 1e-4 of torch) and TorchScript, and rebuilds from JSON
kwargs + safetensors weights. Big models run with batch 2; their ONNX checks are marked slow.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models import create_model, list_models, register_model
from models.fer_net import FER_NET_PRESETS, SEARCH_SPACE
from models.registry import _MODEL_REGISTRY

BATCH = 4
# Big models (>= 15M parameters or 224x224 inputs): batch 2, fewer configurations, ONNX marked slow.
HEAVY = {"cnn5", "cnn6", "vgg16", "vgg16_tl", "resnet50_tl"}
PAPER_MODELS = {
    "cnn5", "cnn6", "cnn_complex", "cnn_moderate", "cnn_simple", "convnet4", "fer_net", "mini_xception",
    "mini_xception_a", "one_vs_rest", "parallel_merge", "resnet50_tl", "resnet_fer", "vgg16", "vgg16_tl",
    "vgg_fer11",
}  # fmt: skip
# Options for the generic tests: parallel_merge runs on three small bases here; its default (the paper's
# Models A, C, D, 35.7M parameters) is built and run once in tests/test_models_merge.py.
TEST_KWARGS: dict[str, dict] = {
    "parallel_merge": {
        "bases": [
            {"arch": "mini_xception", "kwargs": {}},
            {"arch": "vgg_fer11", "kwargs": {"dropout": 0.3}},
            {"arch": "fer_net", "kwargs": {"stages": 3, "width": 16}},
        ]
    }
}


def _create(name: str, **kwargs) -> nn.Module:
    return create_model(name, **{**TEST_KWARGS.get(name, {}), **kwargs})


def _n_params(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _batch(name: str) -> int:
    return 2 if name in HEAVY else BATCH


def _configs(name: str) -> list[tuple[int, int]]:
    """(num_classes, in_chans) pairs: all four, or the two that cover 7/8 classes and 1/3 channels."""
    diagonal = [(7, 1), (8, 3)]
    return diagonal if name in HEAVY else [*diagonal, (7, 3), (8, 1)]


def _input(model: nn.Module, batch: int) -> torch.Tensor:
    return torch.randn(batch, model.in_chans, model.input_size, model.input_size)


def _with_bn_statistics(model: nn.Module, batch: int) -> nn.Module:
    """Give BatchNorm non-trivial running statistics so the eval graph is exercised for real."""
    model.train()
    with torch.no_grad():
        for _ in range(2 if batch > 2 else 1):
            model(_input(model, max(batch, 2)))
    return model.eval()


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
    assert set(names) == PAPER_MODELS


@pytest.mark.parametrize("name", list_models())
def test_model_contract(name: str) -> None:
    """Shapes, finiteness, gradients and channels_last for 7/8 classes and 1/3 input channels.

    Heavy models check channels_last in their last configuration only.
    """
    batch = _batch(name)
    for num_classes, in_chans in _configs(name):
        model = _create(name, num_classes=num_classes, in_chans=in_chans)
        assert isinstance(model, nn.Module)
        assert (model.num_classes, model.in_chans) == (num_classes, in_chans)
        x = _input(model, batch)

        model.train()
        out = model(x)
        assert out.shape == (batch, num_classes)
        assert torch.isfinite(out).all()
        out.logsumexp(dim=1).mean().backward()  # loss that reaches every logit
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{name}: no grad for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite grad for {pname}"

        if name in HEAVY and (num_classes, in_chans) != _configs(name)[-1]:
            continue
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
        assert out_cl.shape == (batch, num_classes)
        out_cl.logsumexp(dim=1).mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model_cl.parameters())


@pytest.mark.parametrize("name", list_models())
def test_dropout_kwarg(name: str) -> None:
    model = _create(name, dropout=0.3)
    assert any(isinstance(m, nn.Dropout | nn.Dropout2d) and m.p == 0.3 for m in model.modules())
    model.eval()
    x = _input(model, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # dropout inactive in eval mode


def _onnx_matches(name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    for num_classes, in_chans in [(8, 3)] if name in HEAVY else [(7, 1), (8, 3)]:
        model = _create(name, num_classes=num_classes, in_chans=in_chans)
        model = _with_bn_statistics(model, _batch(name))
        x = _input(model, _batch(name))
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter DeprecationWarning, tracer warnings
            torch.onnx.export(
                model,
                (x,),
                buffer,
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(buffer.getvalue(), opts, providers=["CPUExecutionProvider"])
        for batch in (x.shape[0], 1):
            xb = x[:batch]
            with torch.no_grad():
                expected = model(xb).numpy()
            (got,) = sess.run(["logits"], {"input": xb.numpy()})
            assert got.shape == (batch, num_classes)
            assert np.abs(got - expected).max() <= 1e-4, f"{name}: onnxruntime differs from torch"


@pytest.mark.parametrize("name", sorted(set(list_models()) - HEAVY))
def test_onnx_export_matches_torch(name: str) -> None:
    _onnx_matches(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY))
def test_onnx_export_matches_torch_heavy(name: str) -> None:
    _onnx_matches(name)


@pytest.mark.parametrize("name", list_models())
def test_torchscript_matches_torch(name: str) -> None:
    model = _with_bn_statistics(_create(name, num_classes=8, in_chans=3), _batch(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 steers towards torch.export
        scripted = torch.jit.script(model)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    x = _input(model, _batch(name))
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(list_models()) - HEAVY))
def test_rebuild_from_json_kwargs_and_safetensors(name: str, tmp_path) -> None:
    """What search/ does with an export: create_model(arch, **json kwargs), then load safetensors weights."""
    kwargs = json.loads(
        json.dumps({**TEST_KWARGS.get(name, {}), "num_classes": 8, "in_chans": 3, "dropout": 0.2})
    )
    model = _with_bn_statistics(create_model(name, **kwargs), 2)
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    rebuilt = create_model(name, **kwargs)
    rebuilt.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    rebuilt.eval()
    x = _input(model, 2)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_param_counts() -> None:
    # Exact counts of the papers' tables (7 classes, trainable parameters).
    assert _n_params(create_model("resnet_fer")) == 9_766_391  # paper 002 Table 1
    assert _n_params(create_model("cnn5")) == 16_299_783  # paper 004 Table 3
    assert _n_params(create_model("cnn6")) == 34_535_175  # paper 004 Table 5
    assert _n_params(create_model("resnet50_tl")) == 27_718_727  # paper 004 Table 8, all layers train
    vgg_tl = create_model("vgg16_tl", freeze_base=True)
    assert _n_params(vgg_tl) == 6_795_911  # paper 004 Table 7, base frozen
    assert _n_params(vgg_tl, trainable_only=False) == 16_790_983  # + 9,995,072 frozen base
    # Paper 004 Tables' "non-trainable" counts are BN moving statistics (+ frozen base): buffers here.
    bn_stats = sum(b.numel() for n, b in create_model("cnn5").named_buffers() if "running" in n)
    assert bn_stats == 7_424

    # Counts of the nets whose papers give widths only through public code or not at all.
    assert _n_params(create_model("convnet4")) == 5_155_847  # paper 003 code (Keras summary)
    assert _n_params(create_model("cnn_moderate")) == 1_485_831  # serengil/tensorflow-101 model
    assert _n_params(create_model("cnn_simple")) == 846_855
    assert _n_params(create_model("cnn_complex")) == 2_492_359
    assert _n_params(create_model("vgg16")) == 33_628_999

    n_mx = _n_params(create_model("mini_xception", num_classes=7))
    assert n_mx == 56_951  # reference Keras mini_XCEPTION: 58,423 incl. 1,472 BN moving statistics
    n_a = _n_params(create_model("mini_xception_a", num_classes=7))
    assert n_a == 585_151
    assert abs(n_a - 600_000) / 600_000 < 0.05  # paper 000: "approximately 600,000"
    n_vgg = _n_params(create_model("vgg_fer11", num_classes=7))
    assert n_vgg == 1_468_839
    assert abs(n_vgg - 1_460_000) / 1_460_000 <= 0.02  # paper 000: "close to 1,460,000"

    # One more class adds one output row: fan-in + 1 parameters.
    for name, fan_in in (("resnet_fer", 512), ("cnn5", 256), ("cnn6", 2048), ("vgg_fer11", 128)):
        assert _n_params(create_model(name, num_classes=8)) == _n_params(create_model(name)) + fan_in + 1


def test_resnet_fer_dropout_rates() -> None:
    rates = [m.p for m in create_model("resnet_fer").modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.3, 0.3, 0.3, 0.3, 0.4, 0.4]  # paper 002: 0.3 early, 0.4 in the last conv block
    custom = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert [
        m.p for m in create_model("resnet_fer", dropout=custom).modules() if isinstance(m, nn.Dropout)
    ] == custom
    with pytest.raises(ValueError, match="6 rates"):
        create_model("resnet_fer", dropout=[0.1, 0.2])


def test_feature_map_sizes_follow_the_tables() -> None:
    x = torch.randn(2, 1, 48, 48)
    net = create_model("resnet_fer").eval()
    with torch.no_grad():
        assert net.block1(x).shape[-3:] == (32, 24, 24)
        assert net.forward_features(x).shape[-3:] == (512, 1, 1)
        assert create_model("cnn5").eval().forward_features(x).shape[-3:] == (1024, 1, 1)
        assert create_model("cnn6").eval().forward_features(x).shape[-3:] == (2048, 1, 1)
        assert create_model("convnet4").eval().forward_features(x).shape[-3:] == (512, 3, 3)


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


@pytest.mark.parametrize("name", ["cnn5", "cnn_simple", "cnn_moderate", "cnn_complex", "convnet4", "vgg16"])
def test_flattening_models_follow_input_size(name: str) -> None:
    model = create_model(name, input_size=64).eval()
    assert model.input_size == 64
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)


@pytest.mark.parametrize("preset", sorted(FER_NET_PRESETS))
def test_fer_net_space_contains_the_small_nets(preset: str) -> None:
    """The preset rebuilds the named net: same parameter tensors in the same order, same function."""
    reference = _with_bn_statistics(create_model(preset), 2)
    family = create_model("fer_net", **json.loads(json.dumps(FER_NET_PRESETS[preset])))
    ref_state, fam_state = reference.state_dict(), family.state_dict()
    assert [t.shape for t in fam_state.values()] == [t.shape for t in ref_state.values()]
    assert _n_params(family) == _n_params(reference)
    family.load_state_dict(dict(zip(fam_state, ref_state.values(), strict=True)))
    family.eval()
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(family(x), reference(x))


def test_fer_net_search_space_samples_build_and_run() -> None:
    rng = np.random.default_rng(0)
    for _ in range(12):
        kwargs = {key: values[rng.integers(len(values))] for key, values in SEARCH_SPACE.items()}
        kwargs = json.loads(json.dumps(kwargs))
        model = create_model("fer_net", dropout=0.2, **kwargs).train()
        out = model(torch.randn(2, 1, 48, 48))
        assert out.shape == (2, 7), kwargs
        out.sum().backward()


def test_fer_net_rejects_nets_that_pool_to_nothing() -> None:
    with pytest.raises(ValueError, match="to nothing"):
        create_model("fer_net", stages=7, residual=False)


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
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('search', 'data_pipeline', 'cluster')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_benchmark_script_runs(tmp_path) -> None:
    root = Path(__file__).resolve().parents[1]
    report = tmp_path / "bench.json"
    script = root / "benchmarks" / "models.py"
    cmd = [sys.executable, str(script), "--models", "cnn_simple", "--seconds", "0.05", "--json", str(report)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root)
    assert "cnn_simple" in out.stdout and "GFLOP/s" in out.stdout
    (row,) = json.loads(report.read_text())["models"]
    assert row["params"] == 846_855 and row["gflops"] > 0 and row["ort_ms_per_1000"] > 0
