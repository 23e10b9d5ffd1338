"""fersearch's public face: say what to search (``spec``), search (``tuning``), pick and export the ensemble
(``ensemble``, ``serving``), read the report (``reporting``). One sub-package per stage, lowest first:

``spec`` → ``trial`` → ``tracking`` → ``tuning`` → ``ensemble`` → ``serving`` → ``reporting`` → ``pipeline``
→ ``cli``; a stage imports only stages before it, each through the names its ``__init__`` lists.

Names here load on first use, so ``import search`` (and ``fersearch --help``) stays free of Ray and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name → the sub-package (or module) that defines it
_HOMES = {
    "SearchConfig": "search.spec",
    "SearchSpace": "search.spec",
    "load_spec": "search.spec",
    "quick_config": "search.spec",
    "demo_config": "search.spec",
    "search": "search.tuning",
    "resume": "search.tuning",
    "TrialRecord": "search.tuning",
    "SearchFailed": "search.tuning",
    "DataSource": "search.pipeline",
    "run": "search.pipeline",
    "select_and_export": "search.pipeline",
    "WeightedEnsemble": "search.ensemble",
    "Predictor": "search.serving",
    "predict_paths": "search.serving",
}

__all__ = [
    "DataSource",
    "Predictor",
    "SearchConfig",
    "SearchFailed",
    "SearchSpace",
    "TrialRecord",
    "WeightedEnsemble",
    "demo_config",
    "load_spec",
    "predict_paths",
    "quick_config",
    "resume",
    "run",
    "search",
    "select_and_export",
]

if TYPE_CHECKING:
    from search.ensemble import WeightedEnsemble
    from search.pipeline import DataSource, run, select_and_export
    from search.serving import Predictor, predict_paths
    from search.spec import SearchConfig, SearchSpace, demo_config, load_spec, quick_config
    from search.tuning import SearchFailed, TrialRecord, resume, search


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
