"""Great Expectations data docs (HTML) of the declared gates, rendered into the lake."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from portrait.core import storage
from portrait.core.config import Conf
from portrait.gates import gx
from portrait.gates.declarations import as_date, table_checks


def data_docs_dir(lake: str) -> str:
    """Where the lake keeps its rendered data docs."""
    return storage.join(lake, "ops", "data_docs")


def render_data_docs(spark, frames: dict, dt, directory: str, conf: Conf | None = None) -> str:
    """Render GX data docs (HTML) for ``{table: df}`` gated on ``dt`` into ``directory``.

    Not on the daily path (``run_gate`` keeps no GX stores): this validates the
    frames once more through a stored suite, ValidationDefinition and Checkpoint
    with an UpdateDataDocsAction writing a file site (``data_docs_dir(lake)``),
    about a second per small table. The site index lists what this process
    rendered; pages of earlier renders stay in the directory. GX writes a local
    site: on object storage it is rendered to a temporary folder and uploaded.
    Returns the path of ``index.html``.
    """
    conf = conf or Conf()
    dt = as_date(dt)
    remote = storage.is_remote(directory)
    target = Path(tempfile.mkdtemp(prefix="portrait-docs-") if remote else directory).resolve()
    target.mkdir(parents=True, exist_ok=True)
    gx.update_data_docs(spark, target, {f"{table}.{dt}": (table_checks(conf, table, dt), df) for table, df in frames.items()})
    if remote:
        storage.upload_tree(str(target), directory)
        shutil.rmtree(target, ignore_errors=True)
        return storage.join(directory, "index.html")
    return str(target / "index.html")
