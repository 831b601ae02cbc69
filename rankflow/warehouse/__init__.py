"""The DuckDB warehouse: dbt builds staging, quarantine, marts and the parquet exports Feast
reads, into a copy that is swapped in only when every model and test passed."""
