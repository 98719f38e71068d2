from pathlib import Path

#: The checkout the tests run from.
REPO_ROOT = Path(__file__).resolve().parents[1]
