"""From trial checkpoints to one ensemble: :class:`Candidate` models on disk, greedy (Caruana) selection,
the comparison of strategies and the parallel-merge net, each ending in a :class:`WeightedEnsemble`."""

from search.ensemble.comparison import (
    GREEDY,
    GREEDY_MERGE,
    STUDENT,
    Row,
    bootstrap_ci,
    choose,
    compare,
    format_rows,
    model_row,
)
from search.ensemble.merge import MERGE_DIR, train_merge
from search.ensemble.selection import Selection, bagged_select, greedy_select, load_val_probs
from search.ensemble.weighted import Candidate, WeightedEnsemble

__all__ = [
    "Candidate",
    "GREEDY",
    "GREEDY_MERGE",
    "MERGE_DIR",
    "Row",
    "STUDENT",
    "Selection",
    "WeightedEnsemble",
    "bagged_select",
    "bootstrap_ci",
    "choose",
    "compare",
    "format_rows",
    "greedy_select",
    "load_val_probs",
    "model_row",
    "train_merge",
]
