"""Weights & Biases: per-trial logging and the search summary (offline unless a key is set); the exported
ensemble's artifact is logged by ``search.serving``."""

from search.tracking.wandb_logging import (
    inline_images,
    log_summary,
    print_sync_hint,
    read_offline_artifacts,
    read_offline_meta,
    read_offline_run,
    sync_command,
    wandb_callback,
    wandb_mode,
)

__all__ = [
    "inline_images",
    "log_summary",
    "print_sync_hint",
    "read_offline_artifacts",
    "read_offline_meta",
    "read_offline_run",
    "sync_command",
    "wandb_callback",
    "wandb_mode",
]
