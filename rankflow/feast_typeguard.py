"""Feast's classes without typeguard's import-time instrumentation.

Feast decorates its public classes (``FeatureView``, ``OnDemandFeatureView``, ``DataSource``,
``FeatureService``, ...) with typeguard's ``@typechecked``. typeguard 4 instruments each method
when the class is defined: it reads the whole module's source, parses it, rewrites the tree and
compiles it again, once per method (agronholm/typeguard#468). ``import feast`` does that about
240 times: 6-7 s of CPU in every process that imports it, about half of its import time
(``python -X importtime -c "import feast"``), paid by every ``rankflow`` command, flow run,
service start and test worker.

:func:`skip_feast_instrumentation` makes ``@typechecked`` return Feast's classes and functions
as they are written, before Feast is imported; every other user of typeguard is unchanged.
What is lost is typeguard's check of the argument types of Feast's constructors and methods at
call time; Feast still validates its definitions at ``feast apply`` (``FeatureStore.plan``),
and rankflow's own calls are covered by its tests. Other platforms built on Feast patch the
same decorator for the same reason (featurebyte does, for online retrieval latency).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

SKIPPED_PACKAGE = "feast"


def skip_feast_instrumentation() -> None:
    """Replace ``typeguard.typechecked`` with one that leaves Feast's code alone. A no-op when
    Feast is already imported (its classes are instrumented by then), when typeguard is not
    installed, or when it already ran."""
    if SKIPPED_PACKAGE in sys.modules:
        return
    try:
        import typeguard
    except ImportError:
        return
    original = typeguard.typechecked
    if getattr(original, "_rankflow_skips", None) == SKIPPED_PACKAGE:
        return

    def typechecked(target: Any = None, **options: Any) -> Any:
        if target is None:  # @typechecked(...) with options
            return functools.partial(typechecked, **options)
        module = str(getattr(target, "__module__", "") or "")
        if module == SKIPPED_PACKAGE or module.startswith(SKIPPED_PACKAGE + "."):
            return target
        return original(target, **options)

    functools.update_wrapper(typechecked, original)
    typechecked._rankflow_skips = SKIPPED_PACKAGE  # type: ignore[attr-defined]
    typeguard.typechecked = typechecked
