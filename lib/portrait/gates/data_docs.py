"""Great Expectations data docs (HTML) of the declared gates, rendered into the lake."""

from __future__ import annotations

from pathlib import Path

from portrait.core.config import Conf
from portrait.gates import gx
from portrait.gates.declarations import as_date, table_checks


def data_docs_dir(lake: str) -> str:
    """Where the lake keeps its rendered data docs."""
    return str(Path(lake) / "ops" / "data_docs")


def render_data_docs(spark, frames: dict, dt, directory: str, conf: Conf | None = None) -> str:
    """Render GX data docs (HTML) for ``{table: df}`` gated on ``dt`` into ``directory``.

    Not on the daily path (``run_gate`` keeps no GX stores): this validates the
    frames once more through a stored suite, ValidationDefinition and Checkpoint
    with an UpdateDataDocsAction writing a file site (``data_docs_dir(lake)``),
    about a second per small table. The site index lists what this process
    rendered; pages of earlier renders stay in the directory. Returns the
    path of ``index.html``.
    """
    conf = conf or Conf()
    dt = as_date(dt)
    target = Path(directory).resolve()
    target.mkdir(parents=True, exist_ok=True)
    gx.update_data_docs(spark, target, {f"{table}.{dt}": (table_checks(conf, table, dt), df) for table, df in frames.items()})
    return str(target / "index.html")
