"""Data-parallel trials: one Tune trial trains one model on ``workers_per_trial`` Ray Train workers (DDP).

The way Ray 2.60 documents Train inside Tune (Train V2): the Tune trial is a thin *driver*
(:func:`train_fer_ddp`) that launches a ``TorchTrainer`` and forwards its reports to Tune with
``TuneReportCallback``; the workers (:func:`fer_ddp_worker`) each train on a disjoint shard of every
epoch with gradients all-reduced by DDP (gloo on CPU, NCCL on GPU). For the big transfer-learning shapes
on multi-GPU nodes; small FER nets are better served by fractional GPUs per trial.

The Train run of a trial is named after the trial and stored under ``<search dir>/train``: when Tune
restarts a failed trial (``max_failures``), Train finds the run and its workers resume from the last
checkpoint, exactly: checkpoints keep the layout of ordinary trials (rank 0 writes ``model.safetensors``,
``state.safetensors`` + ``trial.json`` with the optimiser and schedule, and, on improvement, the
PublicTest/PrivateTest softmax outputs), so ensemble selection and export read them alike; every rank adds
``rng_rank<r>.safetensors`` (its own RNG states), ``shard_rank<r>.npy`` (the sample indices it trained on that
epoch) and ``rank<r>.json`` (shard size, parameter checksum) as evidence of the data split and the sync.

The Train driver is light but must outlive lost workers: it asks for a sliver of the ``fer_driver``
resource when the cluster has one (the head in ``cluster/*.yaml``, the docs' "safe node"), else 1 CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DRIVER_RESOURCE = "fer_driver"
SHARD_FILE = "shard_rank{rank}.npy"
RANK_FILE = "rank{rank}.json"
TRAIN_DIR = "train"


def param_checksum(model) -> str:
    """sha256 over the trainable parameters: equal on every rank iff DDP kept them in sync. (Buffers such
    as BatchNorm statistics are left out: DDP re-broadcasts them from rank 0 before each forward, so
    after the last step each rank holds its own update.)"""
    h = hashlib.sha256()
    for name, t in model.named_parameters():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def epoch_shard(n: int, epoch: int, seed: int, rank: int, world: int) -> np.ndarray:
    """The sample indices rank ``rank`` trains on in ``epoch``: a strided slice of one permutation all
    ranks draw alike, so shards are disjoint; trimmed to ``n // world`` so every rank takes as many steps
    (DDP all-reduces once per step and would hang on a rank with one step more)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[rank::world][: n // world]


def fer_ddp_worker(config: dict) -> None:
    """One Train worker: ``config`` is the trial's config plus ``_data_ref`` and per-worker resources."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    from search.spec import trial_hparams
    from search.trial.trainable import (
        Recipe,
        TrialCheckpoint,
        TrialState,
        arch_kwargs_of,
        build_model,
        keep_score,
        predict_proba,
        train_one_epoch,
    )

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    data = ray.get(config["_data_ref"][0])
    torch.set_num_threads(max(1, int(config.get("cpus_per_worker", 1))))
    gpus = float(config.get("gpus_per_worker", 0.0))
    if gpus > 0 and torch.cuda.is_available():
        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
        if gpus > 0:
            print(f"rank {rank}: asked for {gpus} GPU but CUDA is not available: training on CPU")
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed * 1000 + rank)
    k = data.num_classes
    hp = trial_hparams(config)
    train_x, train_y = data.train[hp["variant"]]

    module = build_model(hp["arch"], k, float(hp["dropout"]), arch_kwargs_of(config))
    # DDP wrapper (rank 0's initial weights are broadcast to the others), moved to this worker's device.
    model = ray.train.torch.prepare_model(module, move_to_device=device)
    module = model.module if hasattr(model, "module") else model

    max_epochs = int(config["max_epochs"])
    per_rank_batch = max(1, int(hp["batch_size"]) // world)
    per_rank_n = len(train_x) // world
    steps_per_epoch = math.ceil(per_rank_n / per_rank_batch)
    recipe = Recipe.from_config(config, model.parameters(), train_y, k, device, steps_per_epoch)
    state = TrialState(plan=recipe.plan)
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # every rank restores weights, optimiser and schedule, and its own RNG states
        with ckpt.as_directory() as d:
            state = TrialCheckpoint(Path(d)).restore(module, device, recipe=recipe, gen=gen, rank=rank)
        print(f"rank {rank}: resumed from epoch {state.epoch} (best PublicTest accuracy {state.best:.4f})")

    val_y = torch.from_numpy(data.val_y)
    for epoch in range(state.epoch + 1, max_epochs + 1):
        shard = epoch_shard(len(train_x), epoch, seed, rank, world)
        t0 = time.perf_counter()
        try:  # DDP all-reduces the gradients in each backward()
            local_loss = train_one_epoch(
                model, recipe.opt, train_x, train_y, batch_size=per_rank_batch, gen=gen, rng=None,
                device=device, order=shard, **recipe.epoch_kwargs(),
            )  # fmt: skip
        except FloatingPointError as e:
            raise FloatingPointError(f"{e} of epoch {epoch} (rank {rank})") from None
        train_s = time.perf_counter() - t0
        loss_sum = torch.tensor([local_loss * len(shard), len(shard)], dtype=torch.float64)
        if distributed:
            dist.all_reduce(loss_sum)

        # Rank 0 evaluates; every rank needs the score (plateau schedule, early stopping) → broadcast.
        t1 = time.perf_counter()
        score = torch.zeros(1, dtype=torch.float64)
        val_probs = None
        if rank == 0:
            val_probs = predict_proba(module, data.val_x)
            score[0] = float(
                multiclass_accuracy(torch.from_numpy(val_probs), val_y, num_classes=k, average="micro")
            )
        if distributed:
            dist.broadcast(score, src=0)
        val_acc = float(score[0])
        recipe.end_epoch(val_acc)
        improved = val_acc > state.best
        if improved:
            state.best, state.best_epoch = val_acc, epoch
        state.epoch = epoch
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "val_acc": val_acc,
            "keep_score": keep_score(val_acc, epoch, recipe.plan, improved),
            "best_val_acc": state.best,
            "train_loss": float(loss_sum[0] / loss_sum[1]),
            "rank_train_loss": local_loss,
            "lr": recipe.opt.param_groups[0]["lr"],
            "world_size": world,
            "rank": rank,
            "shard_size": len(shard),
            "train_images_per_s": float(loss_sum[1]) / train_s,
            "train_s": train_s,
        }
        with tempfile.TemporaryDirectory() as d:
            ckpt_out = TrialCheckpoint(Path(d))
            ckpt_out.save_rank_rng(rank, gen)
            np.save(Path(d) / SHARD_FILE.format(rank=rank), np.sort(shard).astype(np.int32))
            evidence = {
                "rank": rank,
                "world_size": world,
                "shard_size": len(shard),
                "params": param_checksum(module),
                "pid": os.getpid(),
            }
            (Path(d) / RANK_FILE.format(rank=rank)).write_text(json.dumps(evidence))
            if rank == 0:
                val_t = torch.from_numpy(val_probs)
                metrics["val_macro_f1"] = float(
                    multiclass_f1_score(val_t, val_y, num_classes=k, average="macro")
                )
                metrics["params"] = sum(p.numel() for p in module.parameters() if p.requires_grad)
                extra = None
                if improved:
                    confusion = multiclass_confusion_matrix(val_t, val_y, num_classes=k).numpy()
                    extra = (val_probs, predict_proba(module, data.test_x), confusion)
                metrics["eval_s"] = time.perf_counter() - t1
                ckpt_out.save(module, config_for_save(config), metrics, state, extra, recipe=recipe)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(d),
                checkpoint_dir_name=f"checkpoint_epoch{epoch:04d}",
            )
        if recipe.stop_early(epoch, state.best_epoch):
            break


def config_for_save(config: dict) -> dict:
    """The trial config without the plumbing keys (object refs are not JSON)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def train_fer_ddp(config: dict, data_ref: list, train_storage: str, train_max_failures: int = 0) -> None:
    """Tune function trainable (the Train driver): launch a TorchTrainer for this trial and wait for it.

    ``config`` is the usual trial config plus ``workers_per_trial``; ``cpus_per_trial``/``gpus_per_trial``
    are per *worker*. Reports reach Tune through ``TuneReportCallback`` (rank 0's metrics, plus
    ``checkpoint_path``), so ASHA and the searcher see ``val_acc`` per epoch like any trial.
    """
    import ray.train
    import ray.tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    workers = int(config.get("workers_per_trial", 2))
    cpus = float(config.get("cpus_per_trial", 1))
    gpus = float(config.get("gpus_per_trial", 0.0))
    per_worker = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        fer_ddp_worker,
        train_loop_config={**config, "_data_ref": data_ref, "cpus_per_worker": cpus, "gpus_per_worker": gpus},
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            # Same (storage_path, name) when Tune restarts the trial: Train resumes the run.
            name=f"trial_{trial_id}",
            storage_path=train_storage,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=train_max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=int(config.get("checkpoints_to_keep", 2)),
                checkpoint_score_attribute="val_acc",
                checkpoint_score_order="max",
            ),
        ),
    )
    trainer.fit()


def driver_resources() -> dict[str, float]:
    """Where Train drivers run: a sliver of ``fer_driver`` (the head in our configs), else 1 CPU."""
    import ray

    if ray.is_initialized() and ray.cluster_resources().get(DRIVER_RESOURCE, 0) > 0:
        return {"cpu": 0, DRIVER_RESOURCE: 0.01}
    return {"cpu": 1}


def ddp_trainable(
    data, storage: str | Path, *, max_failures: int = 0, resources: dict[str, float] | None = None
):
    """The Tune trainable of data-parallel trials (what the search uses when ``workers_per_trial > 1``).

    ``data`` (a ``TrialData``) goes to the object store once; trials and their workers read it by
    reference. Train runs are stored under ``<storage>/train``; ``storage`` must be shared by all nodes.
    """
    import ray
    from ray import tune

    data_ref = [ray.put(data)]  # nested in a list: Tune passes the reference, workers fetch the data
    train_storage = str(Path(storage).resolve() / TRAIN_DIR)
    fn = tune.with_parameters(
        train_fer_ddp, data_ref=data_ref, train_storage=train_storage, train_max_failures=max_failures
    )
    return tune.with_resources(fn, resources or driver_resources())


def read_rank_evidence(checkpoint_dir: str | Path) -> dict[int, dict]:
    """Per rank: its shard indices and ``rank<r>.json`` from a merged data-parallel checkpoint."""
    d = Path(checkpoint_dir)
    out = {}
    for f in sorted(d.glob("rank*.json")):
        info = json.loads(f.read_text())
        info["shard"] = np.load(d / SHARD_FILE.format(rank=info["rank"]))
        out[int(info["rank"])] = info
    return out


def best_train_checkpoint(run_dir: str | Path) -> Path | None:
    """The retained checkpoint of a Train run (``<storage>/train/trial_<id>``) with the best PublicTest
    accuracy among those holding predictions: what ensemble selection needs from a data-parallel trial."""
    from search.trial.trainable import TRIAL_FILE, TrialCheckpoint

    best, best_acc = None, -1.0
    for trial_file in Path(run_dir).glob(f"checkpoint_*/{TRIAL_FILE}"):
        saved = TrialCheckpoint(trial_file.parent).read()
        acc = saved.val_acc
        if saved.has_predictions and acc > best_acc:
            best, best_acc = trial_file.parent, acc
    return best
