"""Where a search's trials ran: each trial's reported rows (epoch, pid) mapped to Ray node ids.

Tune stamps every result row with the reporting process's ``pid``; GCS's actor table knows each actor
process's node (dead actors included, so the rows of a lost node still resolve). A trial that moved —
restarted on another node after its node was lost — shows rows from two nodes, and the first row on the
new node tells the epoch it resumed from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    epoch: int
    pid: int
    done: bool


def trial_rows(out_dir: str | Path, experiment: str = "tune") -> dict[str, list[Row]]:
    """``trial_id -> rows`` in reporting order, read from the Tune experiment's ``result.json`` files."""
    rows: dict[str, list[Row]] = {}
    for path in sorted(Path(out_dir, experiment).glob("trial_*/result.json")):
        lines = []
        for ln in path.read_text().splitlines():
            try:
                lines.append(json.loads(ln))
            except json.JSONDecodeError:  # a line still being written
                break
        rows[path.parent.name.removeprefix("trial_")] = [
            Row(int(r.get("epoch", r.get("training_iteration", 0))), int(r["pid"]), bool(r.get("done")))
            for r in lines
        ]
    return rows


def actor_pid_nodes() -> dict[int, str]:
    """``pid -> node id (hex)`` of every actor process GCS has seen in this cluster (needs ``ray.init``)."""
    from ray._private.state import actors

    out = {}
    for info in actors().values():
        pid = info.get("Pid")
        node = (info.get("Address") or {}).get("NodeID")
        if pid and node:
            out[int(pid)] = node
    return out


def trial_nodes(out_dir: str | Path, names: dict[str, str] | None = None) -> dict[str, list[tuple[int, str]]]:
    """``trial_id -> [(epoch, node)]``; ``names`` maps node ids to readable names (e.g. from LocalCluster)."""
    pid_node = actor_pid_nodes()
    names = names or {}
    return {
        tid: [(r.epoch, names.get(pid_node.get(r.pid, "?"), pid_node.get(r.pid, "?"))) for r in rows]
        for tid, rows in trial_rows(out_dir).items()
    }
