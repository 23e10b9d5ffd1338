"""What `fersearch run` prints when stdout is not a terminal: fersearch's own plain lines, few of them."""

from __future__ import annotations

import re

import pytest

CONTROL = re.compile(r"\x1b\[|\r")
RAY_MARKERS = ("pid=", "Trial status", "╭", "│", "Current time:", "TensorBoard", "wandb:", "Traceback")


@pytest.mark.slow
def test_run_prints_its_own_plain_lines(demo_run):
    """What the run made by ``demo_run`` (conftest.py: no data given, stdout a file) printed."""
    code, out = demo_run.code, demo_run.out
    assert code == 0
    before = out.split("\nTrials: ", 1)
    assert len(before) == 2, out
    lines = [ln for ln in before[0].splitlines() if ln.strip()]
    assert len(lines) <= 40, "\n".join(lines)
    assert not CONTROL.search(out)
    assert not [ln for ln in out.splitlines() if any(m in ln for m in RAY_MARKERS)], out
    assert (
        lines[0].startswith("No FER2013 CSV given or found")
        and lines[1] == "preset demo on the embedded synthetic set"
    )
    assert re.search(r"trial 3/3 started", before[0]), before[0]
    # the true counts: three trials, each in a named state
    head = before[1].splitlines()[0]
    assert head.startswith("3 (") and re.fullmatch(r"3 \((\d+ [a-z ()]+)(, \d+ [a-z ()]+)*\), .*", head), head
