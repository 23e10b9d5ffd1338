"""parallel_merge (paper 000 Model B): construction from JSON specs or trained modules, and the two phases."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from models import ParallelMerge, create_model
from models.mini_xception import MiniXception
from models.vgg16 import Vgg16
from models.vgg_fer import VggFer

SPECS = [
    {"arch": "mini_xception", "kwargs": {}},
    {"arch": "vgg_fer11", "kwargs": {"dropout": 0.3}},
    {"arch": "fer_net", "kwargs": {"stages": 3, "width": 16}},
]


pytestmark = pytest.mark.usefixtures("one_thread_seeded")


def _trained_bases(num_classes: int = 7) -> list[nn.Module]:
    """Stand-ins for trained bases: built from SPECS, with non-trivial BatchNorm statistics."""
    bases = [create_model(s["arch"], num_classes=num_classes, **s["kwargs"]) for s in SPECS]
    with torch.no_grad():
        for base in bases:
            base.train()(torch.randn(8, 1, 48, 48))
    return bases


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: nn.Module, key_filter=lambda k: True) -> list[str]:
    after = module.state_dict()
    return [k for k, v in before.items() if key_filter(k) and not torch.equal(v, after[k])]


def _train_steps(model: ParallelMerge, lr: float, steps: int = 2) -> None:
    """Real optimiser steps (AdamW with weight decay) on random faces and labels."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    model.train()
    for _ in range(steps):
        x, y = torch.randn(8, 1, 48, 48), torch.randint(0, model.num_classes, (8,))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_phase1_changes_no_base_weight_nor_bn_statistics() -> None:
    model = ParallelMerge.from_trained(_trained_bases(), base_specs=SPECS)
    assert model.phase == 1
    bases_before, merge_before = _snapshot(model.bases), _snapshot(model.merge)
    _train_steps(model, lr=1e-2)
    assert model.training and not any(m.training for m in model.bases.modules())  # bases stay in eval mode
    assert not any(p.requires_grad for p in model.base_parameters())
    assert _changed(bases_before, model.bases) == []  # weights, running_mean/var, num_batches_tracked
    assert _changed(merge_before, model.merge, lambda k: k.endswith("weight"))  # the merge layers did train


def test_phase2_trains_the_bases_too() -> None:
    model = ParallelMerge.from_trained(_trained_bases(), base_specs=SPECS)
    _train_steps(model, lr=1e-2)
    bases_before = _snapshot(model.bases)
    model.set_phase(2)
    assert model.phase == 2 and all(p.requires_grad for p in model.parameters())
    _train_steps(model, lr=1e-4)  # the paper's second phase: everything, at a lower learning rate
    assert all(m.training for m in model.bases.modules())
    changed = _changed(bases_before, model.bases)
    for i in range(len(SPECS)):  # every base's weights and BatchNorm statistics moved
        assert any(k.startswith(f"{i}.") and k.endswith("weight") for k in changed)
        assert any(k.startswith(f"{i}.") and k.endswith("running_mean") for k in changed)


def test_phase_switching_and_eval_mode() -> None:
    model = ParallelMerge.from_trained(_trained_bases(), base_specs=SPECS)
    model.train()
    assert not any(b.training for b in model.bases)
    model.unfreeze_all()
    assert all(b.training for b in model.bases)
    model.eval()
    model.freeze_bases()
    model.train()
    assert model.merge.training and not any(b.training for b in model.bases)
    with pytest.raises(ValueError):
        model.set_phase(3)


def test_from_trained_wraps_the_modules_and_rebuilds_from_json(tmp_path) -> None:
    bases = _trained_bases(num_classes=8)
    model = ParallelMerge.from_trained(bases, base_specs=SPECS, dropout=0.1)
    assert all(a is b for a, b in zip(model.bases, bases, strict=True))  # wrapped, not copied
    assert (model.num_classes, model.in_chans) == (8, 1)
    _train_steps(model, lr=1e-2, steps=1)

    arch_kwargs = json.loads(json.dumps(model.arch_kwargs()))  # what an export manifest stores
    save_file(model.state_dict(), str(tmp_path / "merge.safetensors"))
    rebuilt = create_model("parallel_merge", num_classes=8, in_chans=1, **arch_kwargs)
    rebuilt.load_state_dict(load_file(str(tmp_path / "merge.safetensors")))
    model.eval()
    rebuilt.eval()
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
        torch.testing.assert_close(rebuilt.base_logits(x), torch.stack([b(x) for b in bases], dim=1))


def test_from_trained_without_specs_cannot_describe_itself() -> None:
    model = ParallelMerge.from_trained(_trained_bases())
    with pytest.raises(ValueError, match="base_specs"):
        model.arch_kwargs()


@pytest.mark.parametrize("base_output", ["probs", "log_probs", "logits"])
def test_base_outputs_and_any_k(base_output: str) -> None:
    model = create_model(
        "parallel_merge", num_classes=8, in_chans=3, bases=SPECS[:2], base_output=base_output
    )
    model.eval()
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        assert model.base_logits(x).shape == (3, 2, 8)
        assert model(x).shape == (3, 8)


def test_default_bases_are_paper_000_models_a_c_d() -> None:
    model = create_model("parallel_merge")
    assert [type(b) for b in model.bases] == [MiniXception, Vgg16, VggFer]
    n_bases = sum(p.numel() for p in model.base_parameters())
    assert n_bases == 585_151 + 33_628_999 + 1_468_839
    assert model.arch_kwargs()["bases"][1] == {"arch": "vgg16", "kwargs": {}}
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 48, 48)).shape == (2, 7)


@pytest.mark.parametrize(
    "bases",
    [[], [{"arch": "vgg_fer11", "kwargs": {"num_classes": 3}}], [{"arch": "nope"}], [{"kwargs": {}}]],
)
def test_invalid_base_specs(bases: list) -> None:
    with pytest.raises(ValueError):
        create_model("parallel_merge", bases=bases)
