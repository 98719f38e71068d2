"""Reads the declarations in conf/: small code over data.

Each ``conf/*.yaml`` file is one concern (landing contract, pipeline
settings, tags, segments); declarations with one entry per table (tables,
gates) are folders with one file per layer. ``Conf`` loads them lazily and caches them, so
a DAG file or CLI that never touches a declaration never reads it.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import yaml

CONF_ENV = "PORTRAIT_CONF"
LAKE_ENV = "PORTRAIT_LAKE"
DEFAULT_LAKE = "./lakehouse"


class ConfError(ValueError):
    """A declaration in conf/ is missing or malformed."""


def default_conf_dir() -> Path:
    """``PORTRAIT_CONF``, else the checkout's conf/ (a development install), else the one the wheel bundles."""
    if os.environ.get(CONF_ENV):
        return Path(os.environ[CONF_ENV])
    checkout = Path(__file__).resolve().parents[3] / "conf"
    if (checkout / "pipeline.yaml").is_file():
        return checkout
    return Path(sysconfig.get_path("data")) / "share" / "portrait" / "conf"


def default_lake() -> str:
    return os.environ.get(LAKE_ENV) or DEFAULT_LAKE


#: libyaml's parser where PyYAML was built with it (its wheels are): the same documents as SafeLoader,
#: parsed about 5x faster. Every process (each Airflow task, each CLI call) parses the whole conf/ once
#: for the run and again to validate it, which took over a second in pure Python.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(handle):
    """``yaml.safe_load``, with libyaml when available."""
    return yaml.load(handle, Loader=_LOADER)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)


class _Declaration:
    """A conf file (``conf/NAME.yaml``) or folder (``conf/NAME/*.yaml``), parsed on first use and kept on the Conf."""

    def __init__(self, name: str, folder: bool = False):
        self.name, self.folder = name, folder

    def __get__(self, conf, owner=None):
        if conf is None:
            return self
        value = conf.load_dir(self.name) if self.folder else conf.load(self.name)
        conf.__dict__[self.name] = value  # a plain attribute from now on, as functools.cached_property leaves it
        return value


class Conf:
    """All declarations of one conf directory."""

    def __init__(self, conf_dir: str | Path | None = None):
        self.dir = Path(conf_dir) if conf_dir else default_conf_dir()
        if not self.dir.is_dir():
            raise ConfError(f"conf directory {self.dir} does not exist")

    def load(self, name: str) -> dict:
        """Parse ``conf/{name}.yaml``; errors name the file."""
        path = self.dir / f"{name}.yaml"
        try:
            with path.open(encoding="utf-8") as handle:
                data = parse_yaml(handle)
        except FileNotFoundError:
            raise ConfError(f"missing declaration file {path}") from None
        except yaml.YAMLError as exc:
            raise ConfError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfError(f"{path} must hold a mapping at the top level")
        return data

    def parsed(self, name: str) -> dict:
        """``conf/{name}.yaml`` (or the folder ``conf/{name}/``), from this Conf's cache where it keeps one."""
        if isinstance(getattr(type(self), name, None), _Declaration):
            return getattr(self, name)
        return self.load(name) if (self.dir / f"{name}.yaml").is_file() else self.load_dir(name)

    def load_dir(self, name: str) -> dict:
        """Merge ``conf/{name}/*.yaml``: one file per layer, each entry declared once."""
        folder = self.dir / name
        files = sorted(folder.glob("*.yaml"))
        if not files:
            raise ConfError(f"no declarations in {folder}/*.yaml")
        merged: dict = {}
        for path in files:
            for entry, declaration in self.load(f"{name}/{path.stem}").items():
                if entry in merged:
                    raise ConfError(f"{entry} is declared twice in {folder} (again in {path.name})")
                merged[entry] = declaration
        return merged

    tables = _Declaration("tables", folder=True)
    landing = _Declaration("landing")
    pipeline = _Declaration("pipeline")
    segments = _Declaration("segments")
    gates = _Declaration("gates", folder=True)
