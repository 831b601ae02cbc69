"""Atomic replacement of a folder, for every writer that publishes a folder of files.

Used by the checkpoints here and by rankflow's simulator (``models`` is the bottom package, so
both can import it). The warehouse swaps a database file and its exports folder together, with
a rollback, which is a different transaction (rankflow/warehouse/build.py).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def replace_dir(staging: Path, target: Path) -> None:
    """Replace ``target`` by the finished folder ``staging`` with renames (same file system):
    a reader sees the old folder or the new one, never a mix; the old one is then removed."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, retired)
        os.rename(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, target)
