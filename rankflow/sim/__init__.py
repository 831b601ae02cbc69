"""The simulation: a generator that writes the raw-data contract with a known ground truth,
the oracle that serves that truth to closed-loop traffic, the drift scenario (``rankflow demo``)
and the warm-vs-cold measurement. Demo and measurement code only; production
(``rankflow.canary``, ``rankflow.serving``, ...) imports nothing from here."""
