"""portrait: user profiles (用户画像) built by PySpark jobs into Delta tables."""
from pathlib import Path

#: The repository root in a development (editable) install; conf/ lives here.
REPO_ROOT = Path(__file__).resolve().parents[1]
