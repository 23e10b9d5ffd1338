"""``fersearch submit …``: :func:`register` is the ``fersearch.commands`` entry point (pyproject.toml) that
``search.cli`` loads, so the search package never imports this one."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from cluster.submit import configure_parser

    s = sub.add_parser("submit", help="run a search as a Ray Job on a cluster and stream its logs")
    configure_parser(s)
