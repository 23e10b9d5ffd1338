"""Weights & Biases: per-trial logging, the search summary and the exported artifact (offline unless a
key is set)."""

from search.tracking.wandb_logging import (
    inline_images,
    log_export_artifact,
    log_summary,
    read_offline_artifacts,
    read_offline_meta,
    read_offline_run,
    sync_command,
    wandb_callback,
    wandb_mode,
)

__all__ = [
    "inline_images",
    "log_export_artifact",
    "log_summary",
    "read_offline_artifacts",
    "read_offline_meta",
    "read_offline_run",
    "sync_command",
    "wandb_callback",
    "wandb_mode",
]
