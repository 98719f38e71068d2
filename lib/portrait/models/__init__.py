"""Model tags (issue 5): probabilities in [0, 1] from models over the silver and sub-profile tables.

Each module is pure pandas in, pandas out (fit and score), so the tests drive
them with small hand-made frames; Spark reads and writes stay in the job that
calls them. Settings and label thresholds live in conf/models.yaml.

* ``bgnbd``       P(alive) and expected purchases from order history alone (BG/NBD)
* ``churn``       supervised churn probability from the sub-profiles, scored with mapInPandas
* ``gender``      P(male) from the given name (naive Bayes over characters)
* ``occupation``  P(white_collar), P(student) from delivery places and times (mixture model)
* ``taste``       per-category preference by matrix factorisation
* ``sensitivity`` price and discount sensitivity (empirical-Bayes shrunk rates)
* ``threshold``   the profit-optimal churn threshold;  ``evaluate``: AUC, calibration, plots
* ``registry``    versions, parameters and metrics on Delta (ops.model_registry, ops.model_metrics)
"""

from __future__ import annotations

from portrait.core.config import Conf


def load_settings(conf: Conf) -> dict:
    """conf/models.yaml."""
    return conf.load("models")
