"""From trial checkpoints to one ensemble: greedy (Caruana) selection, the comparison of strategies, the
parallel-merge net."""

from search.ensemble.comparison import (
    GREEDY,
    GREEDY_MERGE,
    Candidate,
    Row,
    Strategy,
    bootstrap_ci,
    choose,
    compare,
    format_rows,
)
from search.ensemble.merge import MERGE_DIR, train_merge
from search.ensemble.selection import bagged_select, greedy_select, load_val_probs

__all__ = [
    "Candidate",
    "GREEDY",
    "GREEDY_MERGE",
    "MERGE_DIR",
    "Row",
    "Strategy",
    "bagged_select",
    "bootstrap_ci",
    "choose",
    "compare",
    "format_rows",
    "greedy_select",
    "load_val_probs",
    "train_merge",
]
