"""portrait: user profiles (用户画像) built by PySpark jobs into Delta tables.

Layers, each a sub-package: ``core`` (conf, engine, the table writer, the
pipeline), ``gates`` (quality gates), ``clean`` (landing -> silver),
``subprofiles`` and ``tags`` (fact tags), ``models`` (model tags), ``master``
(master profile and monitoring), ``segments`` (strategy tags and audiences),
``airflow`` (what the DAG files call) and ``devtools`` (generator, bench,
evaluation reports: not run in production).
"""
