-- First start of the postgres service only (an empty data volume): one database per server.
-- POSTGRES_DB (default rankflow) is created by the image and holds rankflow's own locks.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
