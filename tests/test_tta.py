"""TTA views: the zooms are the affine zooms the training augmentation draws (edges replicated), the
mirror is the mirror, selection and the exported graph average the same views, and an export written
before zooms were recorded is served as it was chosen (mirror only)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch

from search.serving import ExportManifest, Predictor, load_member
from search.trial import FLIP_ONLY, TTA_ZOOMS, build_model, predict_proba, to_tensor, tta_views
from tests.conftest import untrained_export


def test_views_are_zooms_about_the_centre_and_their_mirrors():
    x = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (3, 48, 48)).astype(np.float32), (0, 0), 2)
    views = tta_views(torch.from_numpy(x).unsqueeze(1), TTA_ZOOMS)
    assert views.shape == (2 * len(TTA_ZOOMS) * 3, 1, 48, 48)
    for k, z in enumerate(TTA_ZOOMS):
        m = cv2.getRotationMatrix2D((23.5, 23.5), 0, z)
        ref = np.stack(
            [
                cv2.warpAffine(i, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                for i in x
            ]
        )
        plain, mirror = (
            views[2 * k * 3 : (2 * k + 1) * 3, 0].numpy(),
            views[(2 * k + 1) * 3 : (2 * k + 2) * 3, 0],
        )
        assert np.abs(plain - ref).max() < 2.0, z  # OpenCV rounds its weights to 1/32
        assert torch.equal(mirror, torch.from_numpy(plain).flip(2))
    assert torch.equal(views[:3, 0], torch.from_numpy(x))  # zoom 1.0 is the image itself


def test_tta_probabilities_are_the_mean_over_the_views():
    torch.manual_seed(0)
    model = build_model("mini_xception", 7, 0.0).eval()
    x = np.random.default_rng(1).integers(0, 256, (5, 48, 48)).astype(np.uint8)
    with torch.no_grad():
        per_view = torch.softmax(model(tta_views(to_tensor(x), TTA_ZOOMS)), 1).reshape(6, 5, 7).mean(0)
    got = predict_proba(model, x, batch_size=12, tta=TTA_ZOOMS)  # 2 images a forward pass
    np.testing.assert_allclose(got, per_view.numpy(), atol=1e-6)
    assert not np.allclose(got, predict_proba(model, x))


def tta_export(root):
    """The untrained export with TTA, and its member as a model."""
    export = untrained_export(root, tta=True)
    return load_member(export / "member_0.safetensors", "mini_xception", {}, 7), export


def test_the_exported_graph_averages_the_views_selection_scores(tmp_path):
    model, export = tta_export(tmp_path)
    assert json.loads((export / "manifest.json").read_text())["tta_zooms"] == list(TTA_ZOOMS)
    x = np.random.default_rng(2).integers(0, 256, (9, 48, 48)).astype(np.uint8)
    chosen = predict_proba(model, x, tta=TTA_ZOOMS)  # what the comparison scored
    for backend in ("torch", "onnx"):
        served = Predictor.from_dir(export, backend=backend).predict_proba(x)
        np.testing.assert_allclose(served, chosen, atol=1e-5, err_msg=backend)


def test_an_export_written_before_zooms_mirrors_only(tmp_path):
    model, export = tta_export(tmp_path)
    raw = json.loads((export / "manifest.json").read_text())
    del raw["tta_zooms"]
    (export / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")
    assert ExportManifest.read(export).zooms == FLIP_ONLY
    x = np.random.default_rng(3).integers(0, 256, (4, 48, 48)).astype(np.uint8)
    served = Predictor.from_dir(export, backend="torch").predict_proba(x)
    np.testing.assert_allclose(served, predict_proba(model, x, tta=FLIP_ONLY), atol=1e-5)
    (export / "manifest.json").write_text(json.dumps({**raw, "tta_zooms": [1, 0.9]}, indent=2) + "\n")
    assert ExportManifest.read(export).zooms == (1.0, 0.9)  # recorded zooms are read as floats
