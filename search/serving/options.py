"""How ``fersearch serve`` runs (:class:`ServeOptions`), checked before Ray starts, in a module light enough
for the CLI to import on every call (the Ray Serve application is ``search.serving.serve``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from data_pipeline.preprocess import DETECTORS
from search.serving.predict import CROPS

MAX_BYTES = 10 * 2**20


class ServeError(RuntimeError):
    """``fersearch serve`` cannot start (the port is taken, bad flags); the message says what to change."""


@dataclass(frozen=True)
class ServeOptions:
    """How ``fersearch serve`` runs: where it listens, replicas, batching, the request size limit, and
    the crop (``roi``, ``crop``, ``detector`` as ``fersearch predict`` takes them)."""

    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    max_batch: int = 32
    batch_wait_s: float = 0.005
    max_bytes: int = MAX_BYTES
    roi: bool | str = True
    crop: str | None = None
    detector: str | None = None
    cpus: float | None = None  # the node's CPUs (default: this machine's), shared by the replicas

    def check(self) -> None:
        for name in ("replicas", "max_batch", "max_bytes"):
            if getattr(self, name) < 1:
                raise ServeError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not 0 < self.port < 65536:
            raise ServeError(f"--port must be in 1..65535, got {self.port}")
        if self.crop is not None and self.crop not in CROPS:
            raise ServeError(f"--crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if self.detector is not None and self.detector not in DETECTORS:
            raise ServeError(f"--detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")

    def cpus_per_replica(self) -> float:
        """The node's CPUs shared by the replicas (Ray schedules them; ONNX Runtime takes that many
        threads)."""
        cpus = self.cpus or os.cpu_count() or 1
        return max(0.25, round(cpus / self.replicas, 2))

    def max_ongoing(self) -> int:
        """Requests a replica holds at once: two full batches, so one fills while the other runs."""
        return 2 * self.max_batch


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (Ray Serve's proxy would fail to bind it later,
    in its own process, where the user sees no error)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def ensure_port_free(host: str, port: int) -> None:
    """Raise ``ServeError`` naming the port when something listens there already."""
    if port_in_use(host, port):
        raise ServeError(f"port {port} on {host} is already in use: stop what listens there or pass --port")


__all__ = ["MAX_BYTES", "ServeError", "ServeOptions", "ensure_port_free", "port_in_use"]
