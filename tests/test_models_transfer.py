"""vgg16_tl / resnet50_tl (paper 004 Tables 7-8): channel replication, resizing, local weights, freezing."""

from __future__ import annotations

import socket

import pytest
import torch
from safetensors.torch import save_file

from models import create_model
from models.resnet50 import ResNet50Backbone
from models.vgg16 import VGG16_CFG, make_vgg_features

# Smallest sizes the architectures accept keep these functional tests cheap; 224 runs in test_models.py.
SMALL = {"vgg16_tl": 128, "resnet50_tl": 64}


pytestmark = pytest.mark.usefixtures("one_thread_seeded")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", ["vgg16_tl", "resnet50_tl"])
def test_grey_48x48_faces_are_replicated_and_resized(name: str) -> None:
    grey = create_model(name, in_chans=1, input_size=SMALL[name]).eval()
    rgb = create_model(name, in_chans=3, input_size=SMALL[name]).eval()
    rgb.load_state_dict(grey.state_dict())
    x = torch.randn(2, 1, 48, 48)
    resized = torch.nn.functional.interpolate(x, size=SMALL[name], mode="bilinear", align_corners=False)
    with torch.no_grad():
        out = grey(x)
        assert out.shape == (2, 7)
        torch.testing.assert_close(out, rgb(resized.repeat(1, 3, 1, 1)))


def test_default_input_is_224() -> None:
    assert create_model("vgg16_tl").input_size == 224
    assert create_model("resnet50_tl").input_size == 224
    with pytest.raises(ValueError):
        create_model("vgg16_tl", in_chans=2)


def test_vgg16_tl_loads_torchvision_layout_weights_and_freezes_base(tmp_path, no_network) -> None:
    full = make_vgg_features(VGG16_CFG, 3, batch_norm=False)  # all 13 convs, as in torchvision vgg16
    tensors = {f"features.{k}": v for k, v in full.state_dict().items()}
    tensors["classifier.6.weight"] = torch.randn(1000, 4096)
    path = tmp_path / "vgg16.safetensors"
    save_file(tensors, str(path))

    model = create_model("vgg16_tl", weights=str(path), input_size=SMALL["vgg16_tl"])
    for key, value in model.features.state_dict().items():
        torch.testing.assert_close(value, tensors[f"features.{key}"], rtol=0, atol=0)
    assert not any(p.requires_grad for p in model.features.parameters())  # frozen: weights were given
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 6_795_911
    model.train()
    assert not model.features.training and model.added.training

    trainable = create_model("vgg16_tl", weights=str(path), freeze_base=False, input_size=SMALL["vgg16_tl"])
    assert all(p.requires_grad for p in trainable.parameters())


def test_resnet50_tl_loads_weights_with_bn_statistics(tmp_path, no_network) -> None:
    source = ResNet50Backbone()
    with torch.no_grad():
        source.train()(torch.randn(2, 3, 64, 64))  # non-trivial running statistics
    tensors = {k: v for k, v in source.state_dict().items()}
    tensors["fc.weight"], tensors["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    path = tmp_path / "resnet50.safetensors"
    save_file(tensors, str(path))

    model = create_model("resnet50_tl", weights=str(path), input_size=SMALL["resnet50_tl"])
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, tensors[key], rtol=0, atol=0)
    assert all(p.requires_grad for p in model.parameters())  # paper 004 trains all ResNet50 layers

    frozen = create_model("resnet50_tl", weights=str(path), freeze_base=True, input_size=64).train()
    before = {k: v.clone() for k, v in frozen.backbone.state_dict().items()}
    frozen(torch.randn(2, 1, 48, 48)).sum().backward()
    assert all(torch.equal(v, frozen.backbone.state_dict()[k]) for k, v in before.items())  # BN in eval
    assert all(p.grad is None for p in frozen.backbone.parameters())


def test_weights_that_do_not_fit_are_refused(tmp_path) -> None:
    backbone = ResNet50Backbone().state_dict()
    missing = {k: v for k, v in backbone.items() if not k.startswith("layer4")}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        create_model("resnet50_tl", weights=str(tmp_path / "missing.safetensors"))
    wrong = dict(backbone, **{"conv1.weight": torch.randn(64, 1, 7, 7)})
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match="another shape"):
        create_model("resnet50_tl", weights=str(tmp_path / "wrong.safetensors"))


def test_stride_in_1x1_option_keeps_parameters() -> None:
    v15 = create_model("resnet50_tl", input_size=64)
    v1 = create_model("resnet50_tl", input_size=64, stride_in_1x1=True)
    assert [t.shape for t in v15.state_dict().values()] == [t.shape for t in v1.state_dict().values()]
    v1.load_state_dict(v15.state_dict())
    with torch.no_grad():
        assert v1.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 7)
