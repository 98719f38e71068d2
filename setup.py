"""portrait: a user-profile (用户画像) lakehouse on Spark Connect + Delta.

The repository keeps the design card's layout (lib/, jobs/, conf/, dags/); this
file installs lib/ and jobs/ as ``portrait.lib`` and ``portrait.jobs`` so that
code imports one namespaced package, and ships conf/ beside them.
Pinned dependencies live in requirements.lock (see the Makefile).
"""
from setuptools import setup

setup(
    name="portrait",
    version="0.1.0",
    description="User-profile lakehouse: Airflow + PySpark (Spark Connect) + Delta Lake",
    python_requires=">=3.11,<3.12",
    packages=["portrait", "portrait.lib", "portrait.jobs"],
    package_dir={"portrait": "portrait", "portrait.lib": "lib", "portrait.jobs": "jobs"},
    package_data={"portrait": ["conf/*.yaml"]},
    entry_points={"console_scripts": ["portrait = portrait.lib.cli:main"]},
)
