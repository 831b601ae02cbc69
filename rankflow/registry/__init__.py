"""The model registry: quality gates, the promotion decision (a pure function from candidates
and aliases to a plan of alias moves) and the step that applies a plan through MLflow."""
