"""``uun-gateway mqtt``: operator commands (filled in below)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``mqtt`` command group."""
