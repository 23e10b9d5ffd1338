"""Inference speed of an exported ensemble: each member and the whole ensemble, torch vs ONNX Runtime.

    .venv/bin/python -m benchmarks.inference --export runs/<dir>/export
    .venv/bin/python -m benchmarks.inference          # a synthetic 3-member export, ~1 min on 2 cores

Paper 004's protocol, as in ``benchmarks/models.py``: 1000 images (uint8 48x48 -> float32 pixels 0..255,
as ``Predictor`` feeds them) in batches of 32 after a warm-up; images/s is the best of short windows cycling
through the 1000 images (``--seconds`` per measurement), and ms per 1000 images follows from it -- the best
window is the least disturbed by other processes, and a slow configuration cannot stall the run. Per member
(the member alone, with the export's normalisation, softmax and TTA, as it runs inside the ensemble)
and for the ensemble, on each thread count (``torch.set_num_threads`` / ORT ``intra_op_num_threads``):
torch (the baseline, measured in this run) and ONNX Runtime, and ORT's speed-up over torch. Members run in
ORT from a graph exported here with ``search.serving.export.export_onnx``; the ensemble runs the export's own
``model.onnx``. The ensemble is also compared with the sum of its members' times, and torch and ORT outputs
on all 1000 images with each other (max abs difference). Without ``--export`` a small export is built from
freshly initialised models (untrained: speed only).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import save_file

from models import create_model
from search.ensemble import Candidate, WeightedEnsemble
from search.serving.export import (
    ONNX_FILE,
    EnsembleNet,
    Predictor,
    export_ensemble,
    export_onnx,
    load_member,
)
from search.trial import WEIGHTS_FILE

BATCH = 32
IMAGES = 1000
SYNTH_ARCHS = (("mini_xception", {}), ("cnn_simple", {}), ("cnn_moderate", {}))  # 11, 19, 58 MFLOPs per image
CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")


@dataclass
class Timing:
    name: str
    threads: int
    torch_s: float  # seconds per IMAGES images, from the best window
    ort_s: float

    @property
    def torch_ips(self) -> float:
        return IMAGES / self.torch_s

    @property
    def ort_ips(self) -> float:
        return IMAGES / self.ort_s


def synthetic_export(out: Path, seed: int = 0) -> Path:
    """Export freshly initialised models from checkpoint dirs holding ``model.safetensors``, as trials do."""
    members = []
    for i, (arch, kwargs) in enumerate(SYNTH_ARCHS):
        torch.manual_seed(seed + i)
        model = create_model(arch, num_classes=len(CLASSES), **kwargs).eval()
        ckpt = out / "checkpoints" / f"trial_{i}"
        ckpt.mkdir(parents=True)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(ckpt / WEIGHTS_FILE))
        members.append(Candidate(f"synthetic_{i}", arch, kwargs, ckpt, 0.0))
    ensemble = WeightedEnsemble({i: 1.0 / len(members) for i in range(len(members))})
    return export_ensemble(members, ensemble, out / "export", classes=CLASSES, metrics={"synthetic": True})


def batches(pixels: np.ndarray) -> list[np.ndarray]:
    return [pixels[i : i + BATCH] for i in range(0, len(pixels), BATCH)]


def seconds_per_1000(
    run: Callable[[np.ndarray], np.ndarray], chunks: list[np.ndarray], seconds: float, windows: int = 3
) -> float:
    """Seconds per IMAGES images at the best images/s of ``windows`` windows (``seconds`` in all, >= 1 batch
    each) cycling through ``chunks``, after a warm-up of two batches."""
    for c in chunks[:2]:
        run(c)
    best, i = 0.0, 0
    for _ in range(windows):
        images, t0 = 0, time.perf_counter()
        while images == 0 or time.perf_counter() - t0 < seconds / windows:
            images += len(run(chunks[i % len(chunks)]))
            i += 1
        best = max(best, images / (time.perf_counter() - t0))
    return IMAGES / best


def torch_runner(net: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    net.eval()

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(pixels).contiguous(memory_format=torch.channels_last)
            return net(x).numpy()

    return run


def ort_runner(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda pixels: session.run(None, {"pixels": pixels})[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", help="export directory (default: build a synthetic 3-member export)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--seconds", type=float, default=1.5, help="length of each measurement (3 windows)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    tmp = tempfile.TemporaryDirectory(prefix="bench_inference_")
    work = Path(tmp.name)
    if args.export:
        export = Path(args.export)
        if not (export / ONNX_FILE).is_file():
            ap.error(f"{export}: no {ONNX_FILE} (an old or incomplete export); re-export it")
    else:
        torch.set_num_threads(max(threads))
        export = synthetic_export(work)
        archs = ", ".join(a for a, _ in SYNTH_ARCHS)
        print(f"no --export: timing a synthetic export of 3 freshly initialised (untrained) models: {archs}")

    # from_dir checks the manifest, sha256s and safetensors before timing
    manifest = Predictor.from_dir(export, backend="onnx").manifest
    n_classes, tta = len(manifest.classes), manifest.tta_flip
    entries = manifest.members
    modules = [load_member(export / e.file, e.arch, e.arch_kwargs, n_classes) for e in entries]
    names = [f"member {i}: {e.arch}" for i, e in enumerate(entries)]
    # a member alone, as it runs in the ensemble
    nets = [EnsembleNet([m], [1.0], tta, manifest.zooms) for m in modules]
    onnx_paths = [export_onnx(net, work / f"member_{i}.onnx") for i, net in enumerate(nets)]
    nets.append(EnsembleNet(modules, [float(e.weight) for e in entries], tta, manifest.zooms))
    onnx_paths.append(export / ONNX_FILE)
    names.append(f"ensemble ({len(entries)})")

    rng = np.random.default_rng(args.seed)
    pixels = rng.integers(0, 256, size=(IMAGES, 1, 48, 48), dtype=np.uint8).astype(np.float32)
    chunks = batches(pixels)
    timings: list[Timing] = []
    diffs: dict[str, float] = {}
    for t in threads:
        torch.set_num_threads(t)
        for name, net, path in zip(names, nets, onnx_paths, strict=True):
            torch_run, ort_run = torch_runner(net), ort_runner(path, t)
            if name not in diffs:  # outputs agree: all 1000 images, once
                out_t = np.concatenate([torch_run(c) for c in chunks])
                out_o = np.concatenate([ort_run(c) for c in chunks])
                diffs[name] = float(np.abs(out_t - out_o).max())
            torch_s = seconds_per_1000(torch_run, chunks, args.seconds)
            ort_s = seconds_per_1000(ort_run, chunks, args.seconds)
            timings.append(Timing(name, t, torch_s, ort_s))
        print(f"measured {len(names)} rows on {t} thread(s)", flush=True)

    print(f"\nbatches of {BATCH} after a warm-up, best of 3 windows ({args.seconds:g}s in all) per timing;")
    print("ORT/torch = ORT images/s / torch images/s (>1: ONNX Runtime is faster);")
    print("ensemble/sum = ensemble time / sum of its members' times (members timed alone)\n")
    header = (
        f"{'':<26}{'thr':>4}{'torch img/s':>12}{'torch ms/1k':>12}{'ORT img/s':>11}{'ORT ms/1k':>11}"
        f"{'ORT/torch':>10}{'max |diff|':>12}"
    )
    print(header)
    print("-" * len(header))
    for t in threads:
        rows = [r for r in timings if r.threads == t]
        members, ens = rows[:-1], rows[-1]
        total = Timing("sum of members", t, sum(r.torch_s for r in members), sum(r.ort_s for r in members))
        for r in [*members, total, ens]:
            diff = f"{diffs[r.name]:>12.1e}" if r.name in diffs else f"{'':>12}"
            print(
                f"{r.name:<26}{t:>4}{r.torch_ips:>12.0f}{1000 * r.torch_s:>12.1f}{r.ort_ips:>11.0f}"
                f"{1000 * r.ort_s:>11.1f}{r.ort_ips / r.torch_ips:>10.2f}{diff}"
            )
        print(
            f"{'ensemble/sum of members':<26}{t:>4}{ens.torch_s / total.torch_s:>24.2f}"
            f"{ens.ort_s / total.ort_s:>22.2f}"
        )
        print()
    single = {r.name: r.torch_ips for r in timings if r.threads == 1}
    slower = sorted({r.threads for r in timings if r.torch_ips < single.get(r.name, 0.0)})
    if slower:
        print(
            f"note: torch is slower on {'/'.join(map(str, slower))} threads than on 1 for some rows: the "
            "cores are shared with other load, and torch's threads wait for each other at every op"
        )
    load = os.getloadavg()
    print(
        f"load average {load_before:.1f} at the start, {load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end "
        f"on {os.cpu_count()} CPUs; torch {torch.__version__}, onnxruntime {ort.__version__}; total "
        f"{time.perf_counter() - start:.0f}s"
    )
    if load_before > 0.5:
        print("note: the machine was already busy at the start; timings are best-of windows but disturbed")
    tmp.cleanup()


if __name__ == "__main__":
    main()
