"""The HTML report of a search directory: self-contained, analyses the search, warns in plain words."""

from __future__ import annotations

import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from search.ensemble import Row
from search.metrics import per_class
from search.reporting import warnings_for, write_report

CLASSES = ["Angry", "Disgust", "Fear", "Happy"]
T0 = 1_800_000_000.0


class Links(HTMLParser):
    """Every ``src``/``href`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def row(
    strategy: str, public: float, private: float, ms: float, members: list[str], tta: bool = False
) -> Row:
    return Row(strategy, tta, members, [1 / len(members)] * len(members), public, private, private - 0.01,
               (private - 0.03, private + 0.03), ms)  # fmt: skip


def fake_search(root: Path) -> Path:
    """A finished search directory as the report reads it: spec, data manifest, trials table, Tune results
    (two workers), a best checkpoint with its PublicTest confusion, and a real Optuna journal."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    root.mkdir()
    cfg = {"name": "demo", "num_samples": 4, "max_epochs": 3, "time_budget_s": 300, "objectives": ["val_acc"],
           "resources": {"cpu": 1, "gpu": 0}}  # fmt: skip
    (root / "search.json").write_text(json.dumps({"config": cfg, "data": str(root / "synthetic" / "x.csv")}))
    (root / "data").mkdir()
    counts = {
        s: dict.fromkeys(CLASSES, n)
        for s, n in (("Training", 100), ("PublicTest", 150), ("PrivateTest", 150))
    }
    (root / "data" / "manifest.json").write_text(json.dumps({"classes": CLASSES, "counts": counts}))
    trials = [
        ("a1", "vgg_fer11", 1e-3, 0.2, 0.70, 3),
        ("b2", "mini_xception", 2e-3, 0.4, 0.66, 3),
        ("c3", "vgg_fer11", 5e-4, 0.1, 0.50, 1),
        ("d4", "mini_xception", 8e-4, 0.3, 0.68, 3),
    ]
    with open(root / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "status", "arch", "lr", "dropout", "optimizer", "max_epochs", "val_acc",
                    "best_epoch", "epochs", "params"])  # fmt: skip
        for tid, arch, lr, d, acc, ep in trials:
            w.writerow([tid, "done" if ep == 3 else "pruned", arch, lr, d, "adam", 3, acc, ep, ep, 100_000])
    study = optuna.create_study(
        study_name="demo", direction="maximize",
        storage=JournalStorage(JournalFileBackend(str(root / "optuna.journal"))),
    )  # fmt: skip
    for i, (tid, arch, _, _, acc, ep) in enumerate(trials):
        t = study.ask()
        t.suggest_categorical("arch", ["vgg_fer11", "mini_xception"])
        t.suggest_float("lr", 3e-4, 3e-3, log=True)
        t.suggest_float("dropout", 0.0, 0.5)
        study.tell(t, acc)
        trial_dir = root / "tune" / f"trial_{tid}"
        ckpt = trial_dir / "checkpoint_000000"
        ckpt.mkdir(parents=True)
        lines = []
        for e in range(1, ep + 1):
            end = T0 + 100 * (i // 2) + 30 * e
            r = {
                "epoch": e,
                "val_acc": acc * e / ep,
                "timestamp": end,
                "time_this_iter_s": 30,
                "hostname": "vm",
            }
            lines.append(json.dumps({**r, "pid": 100 + i % 2}))
        (trial_dir / "result.json").write_text("\n".join(lines) + "\n")
        (ckpt / "trial.json").write_text(json.dumps({"best_val_acc": acc, "config": {"arch": arch}}))
        np.save(ckpt / "PublicTest_confusion.npy", np.diag([30, 1, 20, 40]) + 2)
    return root


@pytest.fixture
def search_dir(tmp_path):
    return fake_search(tmp_path / "demo-20260101")


def test_report_folder_copied_elsewhere_has_no_broken_link(search_dir, tmp_path):
    rows = [
        row("best single", 0.700, 0.69, 10, ["a1"]),
        row("greedy selection", 0.707, 0.68, 43, ["a1", "d4"]),
    ]
    confusion = np.array([[30, 0, 5, 3], [4, 0, 1, 2], [3, 0, 25, 6], [1, 0, 2, 40]])
    page = write_report(search_dir, rows, rows[1], confusion)
    assert page == search_dir / "report" / "report.html"

    copy = tmp_path / "elsewhere" / "copied-report"
    shutil.copytree(page.parent, copy)
    shutil.rmtree(search_dir)  # nothing of the search directory may be needed any more
    parser = Links()
    parser.feed((copy / "report.html").read_text())
    assert len(parser.links) >= 8  # the figures are there, and every one is a file inside the folder
    for link in parser.links:
        assert "/" not in link and ":" not in link, link
        assert (copy / link).is_file(), link
    names = set(parser.links)
    assert {"best_so_far.png", "timeline.png", "importance.png", "parallel_coordinates.png",
            "confusion_exported.png", "confusion_best_trial.png"} <= names  # fmt: skip


def test_report_analyses_and_warns(search_dir):
    rows = [
        row("best single", 0.700, 0.69, 10, ["a1"]),
        row("greedy selection", 0.707, 0.68, 43, ["a1", "d4"]),
    ]
    confusion = np.array([[30, 0, 5, 3], [4, 0, 1, 2], [3, 0, 25, 6], [1, 0, 2, 40]])
    text = write_report(search_dir, rows, rows[1], confusion, started=T0).read_text()
    # The exported row is highlighted, the trials table has every trial with state and hyperparameters.
    assert "<tr class='exported'><td class='l'>greedy selection ← exported" in text
    assert text.count("<tr class='member'>") == 2 and "pruned at epoch 1/3" in text
    assert "<th>lr</th>" in text and "<th>dropout</th>" in text and "optimizer adam" in text
    # 0.007 of 600 images is 4 images, inside ±1.96·√(0.7·0.3/600) ≈ ±0.037: noise; 4.3× the latency.
    assert "inside the noise: +0.0070 (+4 of 600 images)" in text
    assert "4.3× the inference time" in text and "scored 0.6800 against 0.6900" in text
    assert "Disgust is never predicted by the exported model on PrivateTest: all 7 Disgust images" in text
    assert "trials (first start → last end)" in text and "ensembles, PrivateTest scoring, export" in text


def test_no_warning_for_a_clear_lead_or_a_single_export():
    rows = [row("best single", 0.60, 0.60, 10, ["a1"]), row("greedy selection", 0.70, 0.71, 30, ["a1", "b2"])]
    full = np.eye(3, dtype=int) * 10 + 1
    assert warnings_for(rows, rows[1], 600, full, CLASSES[:3]) == []
    assert warnings_for(rows, rows[0], 600, full, CLASSES[:3]) == []


def test_per_class_scores_from_the_confusion_matrix():
    m = np.array([[8, 2, 0], [0, 0, 5], [2, 0, 3]])
    s = {r["class"]: r for r in per_class(m, ["a", "b", "c"])}
    assert s["a"]["precision"] == pytest.approx(0.8) and s["a"]["recall"] == pytest.approx(0.8)
    assert s["b"] == {"class": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 5, "predicted": 2}
    assert s["c"]["precision"] == pytest.approx(3 / 8) and s["c"]["f1"] == pytest.approx(
        2 * 0.375 * 0.6 / 0.975
    )
