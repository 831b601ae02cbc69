"""Training runs: the logistic baseline and the Wide & Deep / DCN-V2 candidates trained,
evaluated, logged to MLflow and handed to the registry."""
