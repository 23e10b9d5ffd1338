"""The search itself: Ray Tune + Optuna + ASHA, honest trial states, the progress view, and the service
that prepares data, runs the search and writes the trial tables."""

from search.tuning.progress import route_logs, set_mode
from search.tuning.service import (
    SPEC_FILE,
    init_ray,
    load_trial_data,
    pareto_front,
    prepare_variants,
    read_trials,
    resume,
    search,
    search_config,
    trial_row,
    write_trials_table,
)
from search.tuning.states import (
    CUT,
    DID_NOT_LEARN,
    DONE,
    FAILED,
    NEVER_STARTED,
    PRUNED,
    PRUNED_FILE,
    ChanceLevel,
    close_open_trials,
    count_states,
    pruned_trials,
    trial_state,
)
from search.tuning.tuner import DefineSpace, SearchFailed, TrialRecord, run_search

__all__ = [
    "CUT",
    "ChanceLevel",
    "DID_NOT_LEARN",
    "DONE",
    "DefineSpace",
    "FAILED",
    "NEVER_STARTED",
    "PRUNED",
    "PRUNED_FILE",
    "SPEC_FILE",
    "SearchFailed",
    "TrialRecord",
    "close_open_trials",
    "count_states",
    "init_ray",
    "load_trial_data",
    "pareto_front",
    "prepare_variants",
    "pruned_trials",
    "read_trials",
    "resume",
    "route_logs",
    "run_search",
    "search",
    "search_config",
    "set_mode",
    "trial_row",
    "trial_state",
    "write_trials_table",
]
