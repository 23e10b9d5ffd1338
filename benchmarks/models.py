"""Cost of every registered model on this machine: size, FLOPs, training and inference speed.

Per model: parameters; forward GFLOPs per image (``torch.utils.flop_counter.FlopCounterMode``, one
multiply-add = 2 FLOPs); training images/s on 1 and 2 threads (SGD steps, channels_last as the search trains);
inference time per 1000 images in batches of 32 (paper 004's protocol) in torch and in ONNX Runtime. The
machine's float32 matmul GFLOP/s is measured in the same run, and each model's training GFLOP/s (about 3x
the forward FLOPs per image: forward + backward for activations + for weights) is printed as a fraction of
it -- how well the model's layers use the machine, independent of the machine. Every timing is the best of
short windows, and the matmul rate is re-measured before each model, to limit the effect of other load.

    .venv/bin/python benchmarks/models.py                       # all models, ~5-8 min on 2 cores
    .venv/bin/python benchmarks/models.py --models cnn5,resnet_fer --seconds 1
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# This script shares its name with the package it measures: keep its own folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_models = importlib.import_module("models")
create_model, list_models = _models.create_model, _models.list_models

INFER_BATCH = 32
INFER_IMAGES = 1000
TRAIN_BATCH = 32
TRAIN_BATCH_224 = 8  # 224x224 transfer-learning models: a 32-image step would take tens of seconds


@dataclass
class ModelCost:
    name: str
    params: int
    trainable: int
    input_size: int
    gflops: float
    train_batch: int
    train_ips_1t: float
    train_ips_2t: float
    torch_ms_per_1000: float
    ort_ms_per_1000: float


def timed_rate(step: Callable[[], None], seconds: float, windows: int = 3) -> float:
    """Best steps/second of ``step`` over short windows (>= 1 step each, at least 2 windows, ``seconds``
    in all) after one warm-up step. The best window is the least disturbed by other processes."""
    step()
    best, start = 0.0, time.perf_counter()
    done = 0
    while done < 2 or (done < windows and time.perf_counter() - start < seconds):
        n, t0 = 0, time.perf_counter()
        while n < 1 or time.perf_counter() - t0 < seconds / windows:
            step()
            n += 1
        best = max(best, n / (time.perf_counter() - t0))
        done += 1
    return best


def matmul_gflops(threads: int, seconds: float, size: int = 1024) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    return timed_rate(lambda: torch.mm(a, b), seconds) * 2 * size**3 / 1e9


def forward_gflops(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def train_images_per_s(model: nn.Module, batch: int, threads: int, seconds: float) -> float:
    torch.set_num_threads(threads)
    model.train()
    x = torch.randn(batch, model.in_chans, model.input_size, model.input_size)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.num_classes, (batch,))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return timed_rate(step, seconds) * batch


def inference_ms_per_1000(run: Callable[[], object], seconds: float) -> float:
    return INFER_IMAGES / INFER_BATCH / timed_rate(run, seconds) * 1000


def onnx_session(model: nn.Module, x: torch.Tensor, threads: int) -> ort.InferenceSession:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(buffer.getvalue(), opts, providers=["CPUExecutionProvider"])


def measure(name: str, seconds: float, threads: int) -> ModelCost:
    torch.manual_seed(0)
    model = create_model(name)
    size = model.input_size
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.eval()
    gflops = forward_gflops(model, torch.randn(1, model.in_chans, size, size))

    batch = TRAIN_BATCH_224 if size >= 224 else TRAIN_BATCH
    model = model.to(memory_format=torch.channels_last)
    ips = {t: train_images_per_s(model, batch, t, seconds) for t in (1, 2)}

    torch.set_num_threads(threads)
    model.eval()
    x = torch.randn(INFER_BATCH, model.in_chans, size, size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch_ms = inference_ms_per_1000(lambda: model(x_cl), seconds)
    sess = onnx_session(model.to(memory_format=torch.contiguous_format), x, threads)
    feed = {"input": x.numpy()}
    ort_ms = inference_ms_per_1000(lambda: sess.run(None, feed), seconds)
    return ModelCost(name, params, trainable, size, gflops, batch, ips[1], ips[2], torch_ms, ort_ms)


def print_table(rows: list[ModelCost], peak: dict[int, float], threads: int) -> None:
    print(
        f"\nfloat32 matmul (1024x1024, best): {peak[1]:.1f} GFLOP/s on 1 thread, {peak[2]:.1f} on 2 threads"
    )
    print(f"training: SGD steps, channels_last, batch {TRAIN_BATCH} ({TRAIN_BATCH_224} at 224x224); training")
    print("GFLOP/s = img/s x 3 x forward GFLOPs, '% mm' = share of the matmul rate on the same threads;")
    print(f"inference: ms per {INFER_IMAGES} images in batches of {INFER_BATCH}, {threads} thread(s)\n")
    header = (
        f"{'model':<16}{'params':>12}{'input':>6}{'GFLOPs':>8}{'img/s 1t':>10}{'img/s 2t':>10}"
        f"{'GF/s 1t':>9}{'% mm':>6}{'GF/s 2t':>9}{'% mm':>6}{'torch ms':>10}{'ORT ms':>10}{'ORT x':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        gfs = {t: ips * 3 * r.gflops for t, ips in ((1, r.train_ips_1t), (2, r.train_ips_2t))}
        params = f"{r.params:,}" if r.params == r.trainable else f"{r.trainable:,}*"
        print(
            f"{r.name:<16}{params:>12}{r.input_size:>6}{r.gflops:>8.3f}{r.train_ips_1t:>10.1f}"
            f"{r.train_ips_2t:>10.1f}{gfs[1]:>9.1f}{100 * gfs[1] / peak[1]:>5.0f}%{gfs[2]:>9.1f}"
            f"{100 * gfs[2] / peak[2]:>5.0f}%{r.torch_ms_per_1000:>10.0f}{r.ort_ms_per_1000:>10.0f}"
            f"{r.torch_ms_per_1000 / r.ort_ms_per_1000:>7.2f}"
        )
    if any(r.params != r.trainable for r in rows):
        print("* trainable parameters (part of the model is frozen by default)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated subset of: " + ", ".join(list_models()))
    ap.add_argument("--seconds", type=float, default=1.5, help="length of each timed window")
    ap.add_argument("--threads", type=int, default=2, help="threads for the inference timings")
    ap.add_argument("--json", help="also write the measurements to this file")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else list_models()
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        ap.error(f"unknown models {unknown}")

    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    # The matmul rate is re-measured before every model; the best of all is the machine's rate.
    samples: dict[int, list[float]] = {1: [], 2: []}
    rows = []
    for name in names:
        t0 = time.perf_counter()
        for t in samples:
            samples[t].append(matmul_gflops(t, min(args.seconds, 1.0)))
        rows.append(measure(name, args.seconds, args.threads))
        print(f"measured {name} in {time.perf_counter() - t0:.0f}s", flush=True)
    for t in samples:
        samples[t].append(matmul_gflops(t, min(args.seconds, 1.0)))
    peak = {t: max(v) for t, v in samples.items()}
    print_table(rows, peak, args.threads)
    load = os.getloadavg()
    print(
        f"\nmatmul GFLOP/s over the run: 1 thread {min(samples[1]):.0f}-{peak[1]:.0f}, 2 threads "
        f"{min(samples[2]):.0f}-{peak[2]:.0f}; load average {load_before:.1f} at the start, "
        f"{load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end on {os.cpu_count()} CPUs; total "
        f"{time.perf_counter() - start:.0f}s"
    )
    if load_before > 0.5:
        print("note: the machine was already busy at the start; timings are best-of windows but disturbed")
    if args.json:
        with open(args.json, "w") as f:
            report = {"matmul_gflops": samples, "load_average": load, "models": [asdict(r) for r in rows]}
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
