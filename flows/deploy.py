"""``prefect deploy`` of ``prefect.yaml``, with one compatibility fix for the locked versions.

``python -m flows.deploy [ARGS]`` runs Prefect's own ``prefect --no-prompt deploy ARGS``
(default ``--all``) in this process, from the repository root, against ``$PREFECT_API_URL``.
``make deploy`` calls it.

The fix: after creating each deployment, ``prefect deploy`` lists the work pool's online
workers, and Prefect 3.8.8's client sends that request with ``"offset": null, "limit": null``.
FastAPI up to 0.141 treated a null body field as "use the default"; the FastAPI that
``requirements.lock`` resolves (0.154) validates the null against ``int`` instead, so the server
answers 422 and ``prefect deploy --all`` stops after its first deployment. Here the client sends
the server's defaults (offset 0, limit 200) in place of null. Plain ``prefect deploy`` works
again, and this module can go, once the lock pins a FastAPI that accepts the null or a Prefect
whose client leaves the fields out.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

from rankflow.paths import REPO_ROOT

SERVER_DEFAULT_LIMIT = 200  # PREFECT_SERVER_API_DEFAULT_LIMIT's default


def _paging(offset: int | None, limit: int | None) -> dict[str, int]:
    return {
        "offset": 0 if offset is None else offset,
        "limit": SERVER_DEFAULT_LIMIT if limit is None else limit,
    }


def send_integer_paging() -> None:
    """Make Prefect's clients send integers, never null, as the worker listing's paging."""
    from prefect.client.orchestration._work_pools.client import (
        WorkPoolAsyncClient,
        WorkPoolClient,
    )

    for cls in (WorkPoolAsyncClient, WorkPoolClient):
        original = cls.read_workers_for_work_pool
        if getattr(original, "_rankflow_paging", False):
            continue
        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def fixed(
                self: Any,
                work_pool_name: str,
                worker_filter: Any = None,
                offset: int | None = None,
                limit: int | None = None,
                _original: Any = original,
            ) -> Any:
                return await _original(
                    self, work_pool_name, worker_filter, **_paging(offset, limit)
                )

        else:

            @functools.wraps(original)
            def fixed(
                self: Any,
                work_pool_name: str,
                worker_filter: Any = None,
                offset: int | None = None,
                limit: int | None = None,
                _original: Any = original,
            ) -> Any:
                return _original(self, work_pool_name, worker_filter, **_paging(offset, limit))

        fixed._rankflow_paging = True  # type: ignore[attr-defined]
        cls.read_workers_for_work_pool = fixed  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> None:
    """``prefect --no-prompt deploy ARGS`` from the repository root (default ``--all``)."""
    args = list(sys.argv[1:] if argv is None else argv) or ["--all"]
    send_integer_paging()
    from prefect.cli import app

    os.chdir(REPO_ROOT)  # where prefect.yaml is
    sys.argv = ["prefect", "--no-prompt", "deploy", *args]
    app()


if __name__ == "__main__":
    main()
