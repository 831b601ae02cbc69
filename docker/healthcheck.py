"""Container healthcheck: GET $HEALTHCHECK_URL (2xx = healthy); without one, the CLI imports.

Used by the image's HEALTHCHECK. Servers (scoring service, MLflow, Prefect) set
HEALTHCHECK_URL in docker/compose.yaml; one-shot jobs and workers have no port to ask, so for
them "healthy" means the installed rankflow still imports. Standard library only, no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = os.environ.get("HEALTHCHECK_URL", "").strip()
    if not url:
        import rankflow.cli  # noqa: F401  (the image's code and venv are intact)

        return 0
    try:
        with urllib.request.urlopen(url, timeout=8) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
