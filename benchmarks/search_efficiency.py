"""How much of the machine a search spends training, and how fast trials train vs a bare loop.

    python -m benchmarks.search_efficiency --data ../shared/data/fer2013.csv.gz --minutes 10

Prints, from one run on this machine:
(a) busy fraction: Σ over trials and epochs of (train_s + eval_s) ÷ (cores × search wall time);
(b) trial training images/s ÷ images/s of the same model in a bare loop on in-memory tensors, measured
    just before the search in this process: alone on one thread, and as two concurrent one-thread
    processes (the same packing as two trials on two cores).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_loop(args: tuple[str, str, float, int, dict]) -> float:
    """Images/s of the trainable's inner step (to_tensor + augment + fwd/bwd/step), no Ray, no Tune."""
    root, arch, seconds, batch_size, arch_kwargs = args
    import torch
    import torch.nn.functional as F

    from data_pipeline.fer2013 import load_split
    from search.trial import augment, build_model, to_tensor

    torch.set_num_threads(1)
    x, y = load_split(root, "Training")
    model = build_model(arch, 7, 0.1, arch_kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    model.train()
    seen, start = 0, time.perf_counter()
    warm = 5
    while True:
        idx = np.sort(rng.choice(len(x), batch_size, replace=False))
        xb = augment(to_tensor(x[idx]), gen, 1.0)
        loss = F.cross_entropy(model(xb), torch.from_numpy(y[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        warm -= 1
        if warm == 0:
            seen, start = 0, time.perf_counter()
        elif warm < 0:
            seen += batch_size
            if time.perf_counter() - start >= seconds:
                return seen / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--bare-seconds", type=float, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from search.spec import ArchSpace, Range, SearchConfig, SearchSpace
    from search.tuning import init_ray, search

    out = Path(args.out or tempfile.mkdtemp(prefix="search_eff_"))
    cores = os.cpu_count() or 2
    arch, kwargs = "mini_xception", {"width": 0.5}

    from data_pipeline.prepare import prepare_fer2013

    init_ray()
    prepared = prepare_fer2013(args.data, out / "data")
    job = (str(prepared.root), arch, args.bare_seconds, 64, kwargs)
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        alone = pool.map(bare_loop, [job])[0]
    with ctx.Pool(2) as pool:
        pair = pool.map(bare_loop, [job, job])
    print(
        f"bare loop {arch} {kwargs}: {alone:.0f} img/s alone on 1 thread; "
        f"{pair[0]:.0f} + {pair[1]:.0f} img/s as two concurrent 1-thread processes"
    )

    cfg = SearchConfig(
        name="efficiency",
        space=SearchSpace(
            archs=(ArchSpace(arch, {"width": (0.5,)}),),
            lr=Range(5e-4, 5e-3, log=True),
            dropout=Range(0.0, 0.3),
        ),
        num_samples=12,
        max_epochs=8,
        grace_period=2,
        time_budget_s=args.minutes * 60,
    )
    t0 = time.time()
    result = search(cfg, args.data, out)
    wall = time.time() - t0

    busy, images, train_s = 0.0, 0, 0.0
    for result_file in (out / "tune").glob("trial_*/result.json"):
        for line in result_file.read_text().splitlines():
            r = json.loads(line)
            busy += r["train_s"] + r["eval_s"]
            train_s += r["train_s"]
            images += r["train_images_per_s"] * r["train_s"]
    trial_rate = images / train_s
    print(
        f"search: {len(result.trials)} trials in {wall:.0f} s wall ({args.minutes} min budget, {cores} cores)"
    )
    print(f"(a) busy fraction in train+eval steps: {busy / (cores * wall):.3f}  (target >= 0.85)")
    print(
        f"(b) trial training img/s {trial_rate:.0f}: ratio to bare loop alone {trial_rate / alone:.3f}, "
        f"to bare loop packed two per machine {trial_rate / np.mean(pair):.3f}  (target >= 0.85)"
    )


if __name__ == "__main__":
    main()
