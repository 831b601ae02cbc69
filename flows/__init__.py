"""Prefect flows over the rankflow library: thin, they sequence library calls and hold no logic.

- ``flows.build_features.build_features``: simulate (or take the raw data as it is) -> contract
  check -> dbt build -> ``feast apply`` + ``materialize-incremental``;
- ``flows.train.train``: point-in-time training set -> Wide & Deep and DCN-V2 -> MLflow run,
  registry, first champion (``rankflow.training.step.train_and_register``);
- ``flows.pipeline.pipeline``: both, in order, returning one summary;
- ``flows.gap_check.gap_check``: the offline/online gap checks over the served log
  (``rankflow.monitoring.report.run_gap_check``), returning the verdict.

Every flow takes ``config`` (:class:`flows.params.ConfigParams`: a YAML path and dotted-key
overrides), validated before any work starts, and records the resolved config with the run
(a Prefect artifact and ``$RANKFLOW_HOME/runs/<time>-<flow>/summary.json``).

Run them once with the ``rankflow`` command (``rankflow run``, ``rankflow train``, ...: Prefect's
temporary server, ``PREFECT_HOME`` under the state dir) or as the deployments in
``prefect.yaml`` (``prefect --no-prompt deploy --all``, ``make deploy``). This package's
``__init__`` imports nothing heavy (not even Prefect), so the command can set Prefect's
environment before Prefect reads it.

Modules: ``params`` (the validated ``config`` parameter), ``tasks`` (one task per stage),
``policies`` (what is retried and cached, on which keys), ``records`` (config artifact, run
summary).
"""
