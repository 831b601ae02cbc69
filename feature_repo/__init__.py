"""The rankflow Feast feature repo: entities, sources over the dbt exports, feature views,
on-demand views and feature services.

A package so rankflow can import the definitions without changing the working directory,
``sys.path`` or the environment; ``feast apply`` skips this file and imports the others as
top-level modules, as it does for any feature repo.
"""
