"""W&B logging through Ray Tune's callback: offline unless an API key is set (``wandb sync`` later)."""

from __future__ import annotations

import os
from pathlib import Path

from search.config import SearchConfig

PROJECT = "fersearch"


def wandb_callback(cfg: SearchConfig, storage: Path, group: str):
    from ray.air.integrations.wandb import WandbLoggerCallback

    mode = cfg.wandb
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        print("WANDB_API_KEY is not set: logging to W&B in offline mode (sync later with `wandb sync`)")
        mode = "offline"
    wandb_dir = storage / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLoggerCallback(project=PROJECT, group=group, mode=mode, dir=str(wandb_dir), log_config=True)
