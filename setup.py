"""portrait: a user-profile (用户画像) lakehouse on Spark Connect + Delta.

The repository keeps the design card's layout (lib/, jobs/, conf/, dags/); this
file installs lib/ and jobs/ (with their sub-packages) as ``portrait.lib`` and
``portrait.jobs`` so that code imports one namespaced package. Install it
editable from the checkout: conf/ is read from there (or from PORTRAIT_CONF).
Pinned dependencies live in requirements.lock (see the Makefile).
"""
from pathlib import Path

from setuptools import setup


def _packages(folder: str, name: str) -> dict[str, str]:
    """Map every package below ``folder`` (those with an __init__.py) to ``name``.sub.package."""
    return {
        ".".join([name, *path.parent.relative_to(folder).parts]): str(path.parent)
        for path in sorted(Path(folder).rglob("__init__.py"))
    }


PACKAGE_DIRS = {"portrait": "portrait", **_packages("lib", "portrait.lib"), **_packages("jobs", "portrait.jobs")}

setup(
    name="portrait",
    version="0.1.0",
    description="User-profile lakehouse: Airflow + PySpark (Spark Connect) + Delta Lake",
    python_requires=">=3.11,<3.12",
    packages=list(PACKAGE_DIRS),
    package_dir=PACKAGE_DIRS,
    entry_points={"console_scripts": ["portrait = portrait.lib.cli:main"]},
)
