"""What every portrait task imports, imported once in the Airflow process whose forks run the tasks.

LocalExecutor forks its workers from the scheduler, and each worker forks a
process per task: whatever the scheduler imported is already loaded there.
Imported from ``$AIRFLOW_HOME/config/airflow_local_settings.py`` (the one line
``import portrait.orchestration.preload``, docs/airflow.md), it takes Great
Expectations (about 3 s a gate task) and the engine's client and server
modules (about 1 s a task) out of every task's start. Only imports: no session,
no thread, nothing a fork could inherit half-done.
"""

from __future__ import annotations

import pysail.spark  # noqa: F401 - the embedded engine
import pyspark.sql.connect.session  # noqa: F401 - its client

from portrait.gates import gx

gx.import_gx()
