"""Airflow-facing helpers: the DAG files in dags/ stay thin and call these."""
