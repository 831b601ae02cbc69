"""MLflow: the tracking URI and experiment, lineage tags, the pyfunc model that scores raw
feature rows, and a supervisor for a local ``mlflow server``."""
