"""search/trial/finetune.py: checkpoints reload as models, the classifier can be swapped, fit keeps the
best."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_pipeline.fer2013 import load_split
from data_pipeline.prepare import prepare_fer2013
from data_pipeline.synth import write_fer2013_csv
from search.metrics import accuracy
from search.trial import (
    FitConfig,
    TrialCheckpoint,
    TrialState,
    build_model,
    fit,
    load_checkpoint_model,
    predict_proba,
    replace_head,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("ft")
    return prepare_fer2013(write_fer2013_csv(root / "s.csv.gz", n_rows=300, seed=5), root / "data").root


def test_fit_keeps_the_best_public_test_epoch(data_root):
    torch.set_num_threads(1)
    model = build_model("mini_xception", 7, 0.0, {"width": 0.5})
    r = fit(model, data_root, FitConfig(epochs=3, lr=3e-3, batch_size=32))
    assert len(r.val_history) == 3 and r.val_acc == max(r.val_history)
    assert r.best_epoch == r.val_history.index(r.val_acc) + 1
    val_x, val_y = load_split(data_root, "PublicTest")
    assert accuracy(predict_proba(r.model, val_x), val_y) == pytest.approx(r.val_acc)


def test_a_checkpoint_reloads_for_fine_tuning(data_root, tmp_path):
    val_x, _ = load_split(data_root, "PublicTest")
    model = build_model("vgg_fer11", 7, 0.2).eval()
    probs = predict_proba(model, val_x)
    config = {"arch": "vgg_fer11", "arch_kwargs": {}, "dropout": 0.2, "lr": 1e-3}
    TrialCheckpoint(tmp_path).save(model, config, {"epoch": 1}, TrialState(1, 0.5, 1), (probs, probs, None))
    again = load_checkpoint_model(tmp_path)
    np.testing.assert_allclose(predict_proba(again, val_x), probs, atol=1e-6)
    eight = load_checkpoint_model(tmp_path, num_classes=8)
    assert predict_proba(eight, val_x).shape == (len(val_x), 8)


def test_a_model_without_a_linear_classifier_is_refused():
    with pytest.raises(ValueError, match="no nn.Linear classifier"):
        replace_head(torch.nn.Sequential(torch.nn.Conv2d(1, 7, 3)), 8)
