"""``python -m flows [--config FILE] [--set KEY=VALUE] FLOW [--full-refresh]``: kept for old
habits; the ``rankflow`` command is the one entry (``pipeline`` is ``rankflow run``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rankflow.cli import main as rankflow_main

FLOW_COMMANDS = {"pipeline": "run", "train": "train", "build-features": "build-features"}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return rankflow_main([FLOW_COMMANDS.get(arg, arg) for arg in args])


if __name__ == "__main__":
    sys.exit(main())
