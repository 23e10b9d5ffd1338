"""``fersearch submit …``; ``search.cli`` mounts it with :func:`register` (like ``data_pipeline.cli``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from cluster.submit import configure_parser

    s = sub.add_parser("submit", help="run a search as a Ray Job on a cluster and stream its logs")
    configure_parser(s)
