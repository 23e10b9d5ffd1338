from __future__ import annotations

import inspect
import itertools
import sys

import numpy as np
import pytest

from search.ensemble import bagged_select, greedy_select, load_val_probs
from search.metrics import accuracy
from search.trial import TEST_FILE, VAL_FILE


def _candidates(n_models: int, n_rows: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, size=n_rows)
    probs = []
    for _ in range(n_models):
        logits = rng.normal(size=(n_rows, 7)) + 1.2 * np.eye(7)[labels] * rng.uniform(0.5, 1.5)
        e = np.exp(logits)
        probs.append((e / e.sum(1, keepdims=True)).astype(np.float32))
    return probs, labels


def test_greedy_reaches_best_of_brute_force_over_small_ensembles():
    """Greedy with replacement can't beat the exhaustive optimum, and on easy cases it should match it."""
    probs, labels = _candidates(4, 300, seed=1)
    best_brute = max(
        accuracy(sum(probs[i] for i in combo) / len(combo), labels)
        for k in (1, 2, 3)
        for combo in itertools.combinations_with_replacement(range(4), k)
    )
    sel = greedy_select(probs, labels, max_size=3)
    assert sel.val_score <= best_brute + 1e-12
    assert sel.val_score == pytest.approx(accuracy(sel.ensemble().combine(probs), labels))
    assert sel.val_score >= max(accuracy(p, labels) for p in probs)


def _row(hi_class: int, hi: float, second_class: int, second: float) -> list[float]:
    row = [0.0, 0.0, 0.0]
    row[hi_class], row[second_class] = hi, second
    rest = [i for i in range(3) if i not in (hi_class, second_class)]
    for i in rest:
        row[i] = 1 - hi - second
    return row


def test_greedy_matches_brute_force_on_constructed_case():
    """a is right and sure on rows 0,1,3,4; b is right and sure on rows 2,5; each is unsure where wrong."""
    labels = np.array([0, 1, 2, 0, 1, 2])
    a = np.array([_row(y, 0.8, (y + 1) % 3, 0.1) if y != 2 else _row(0, 0.4, 2, 0.35) for y in labels])
    b = np.array([_row(y, 0.8, (y + 1) % 3, 0.1) if y == 2 else _row(2, 0.4, y, 0.35) for y in labels])
    noise = np.full((6, 3), 1 / 3) + np.eye(3)[[1, 1, 1, 1, 1, 1]] * 0.01
    probs = [noise, a, b]
    brute = max(
        (accuracy(sum(probs[i] for i in combo) / len(combo), labels), combo)
        for k in (1, 2, 3)
        for combo in itertools.combinations_with_replacement(range(3), k)
    )
    sel = greedy_select(probs, labels, max_size=3)
    assert brute[0] == pytest.approx(1.0)
    assert sel.val_score == pytest.approx(brute[0])
    assert sel.members == [1, 2]
    assert sel.counts == (0, 1, 1)


def test_greedy_is_deterministic_and_prefers_chosen_members_on_ties():
    probs, labels = _candidates(6, 200, seed=2)
    runs = {greedy_select(probs, labels).counts for _ in range(3)}
    assert len(runs) == 1
    same = [probs[0], probs[0].copy()]
    sel = greedy_select(same, labels, max_size=5)
    assert sel.counts == (1, 0)


def test_greedy_rejects_mismatched_shapes():
    probs, labels = _candidates(2, 50, seed=0)
    with pytest.raises(ValueError, match="candidate 1"):
        greedy_select([probs[0], probs[1][:10]], labels)


def test_selection_api_takes_no_private_test_input():
    params = set(inspect.signature(greedy_select).parameters)
    assert params == {"val_probs", "val_labels", "max_size", "init_best"}


def test_selection_never_opens_private_test_predictions(tmp_path):
    """Audit every file the selection path opens: PublicTest files only."""
    probs, labels = _candidates(3, 100, seed=4)
    dirs = []
    for i, p in enumerate(probs):
        d = tmp_path / f"trial{i}"
        d.mkdir()
        np.save(d / VAL_FILE, p)
        np.save(d / TEST_FILE, np.zeros_like(p))
        dirs.append(d)
    seen: list[str] = []
    recording = [True]

    def hook(event, args):
        if recording[0] and event == "open" and args and isinstance(args[0], str | bytes):
            seen.append(str(args[0]))

    sys.addaudithook(hook)  # audit hooks cannot be removed; the flag below turns this one off
    try:
        sel = greedy_select(load_val_probs(dirs), labels)
    finally:
        recording[0] = False
    assert any(s.endswith(VAL_FILE) for s in seen)
    assert not any("PrivateTest" in s for s in seen)
    assert sel.members


def _with_noise(n_good: int, n_rows: int, seed: int):
    """``n_good`` informative candidates, then one whose probabilities ignore the labels."""
    probs, labels = _candidates(n_good, n_rows, seed=seed)
    noise = np.random.default_rng(seed + 100).dirichlet(np.ones(7), size=n_rows).astype(np.float32)
    return [*probs, noise], labels


def test_bagged_is_deterministic_for_a_seed():
    probs, labels = _with_noise(5, 300, seed=3)
    first = bagged_select(probs, labels, n_bags=8, seed=7)
    again = bagged_select(probs, labels, n_bags=8, seed=7)
    assert first == again
    assert len(first.history) == 8
    assert first.val_score == pytest.approx(accuracy(first.ensemble().combine(probs), labels))
    others = {bagged_select(probs, labels, n_bags=8, seed=s).counts for s in range(4)}
    assert len(others) > 1  # the seed does drive the bags


def test_bagged_counts_map_back_to_the_drawn_candidates():
    """A perfect candidate is chosen alone by every bag that draws it and never by one that doesn't, so its
    count is the number of bags holding it -- at its own index, whatever subset it sat in."""
    probs, labels = _candidates(6, 120, seed=5)
    perfect = np.eye(7, dtype=np.float32)[labels]
    probs.insert(3, perfect)
    n, n_bags, seed = len(probs), 12, 11
    sel = bagged_select(probs, labels, n_bags=n_bags, fraction=0.5, seed=seed)
    rng = np.random.default_rng(seed)
    draws = [np.sort(rng.choice(n, size=4, replace=False)) for _ in range(n_bags)]  # 0.5 * 7 rounds to 4
    holding = sum(3 in d for d in draws)
    assert 0 < holding < n_bags
    assert sel.counts[3] == holding
    expected = np.zeros(n, dtype=int)
    for d in draws:
        expected[d] += greedy_select([probs[i] for i in d], labels).counts
    assert sel.counts == tuple(expected)


def test_one_full_bag_is_greedy_select():
    probs, labels = _with_noise(5, 250, seed=6)
    for max_size, init_best in ((25, 1), (6, 2)):
        greedy = greedy_select(probs, labels, max_size=max_size, init_best=init_best)
        bagged = bagged_select(probs, labels, n_bags=1, fraction=1.0, max_size=max_size, init_best=init_best)
        assert bagged.counts == greedy.counts
        assert bagged.val_score == pytest.approx(greedy.val_score)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bagged_gives_a_noise_candidate_little_weight(seed):
    probs, labels = _with_noise(5, 400, seed=seed)
    sel = bagged_select(probs, labels, seed=seed)
    w = np.array([sel.ensemble().weights.get(i, 0.0) for i in range(len(probs))])
    assert w[-1] < 0.1
    assert w[-1] < w[:-1].min()
    assert sel.val_score >= max(accuracy(p, labels) for p in probs)


def test_bagged_rejects_bad_input():
    probs, labels = _candidates(3, 50, seed=0)
    with pytest.raises(ValueError, match="at least one candidate"):
        bagged_select([], labels)
    with pytest.raises(ValueError, match="candidate 2 has shape"):
        bagged_select([probs[0], probs[1], probs[2][:, :5]], labels)
    with pytest.raises(ValueError, match="with 49 rows"):
        bagged_select(probs, labels[:49])
    with pytest.raises(ValueError, match="fraction must be in"):
        bagged_select(probs, labels, fraction=0.0)
    with pytest.raises(ValueError, match="n_bags must be at least 1"):
        bagged_select(probs, labels, n_bags=0)


def test_bagged_fraction_keeps_at_least_one_candidate():
    probs, labels = _candidates(3, 80, seed=8)
    sel = bagged_select(probs, labels, n_bags=5, fraction=0.01, max_size=3)
    assert sum(sel.counts) == 5  # each bag holds one candidate, and a lone candidate is chosen once


def test_bagged_api_takes_no_private_test_input():
    params = set(inspect.signature(bagged_select).parameters)
    assert params == {"val_probs", "val_labels", "n_bags", "fraction", "max_size", "init_best", "seed"}
