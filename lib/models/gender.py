"""Gender from the given name: naive Bayes over its characters (seed: 国庆/利民 male, 婷婷/莹莹 female, 爱华 either).

Self-reported gender is often missing and sometimes wrong, but Chinese given
names carry strong evidence: each character is far more common for one
gender. The model learns P(character | gender) and the share of men from
users who reported a gender, with Laplace smoothing; a prior table of
character counts (ngender's ``charfreq.csv``, drawn from a large name
register) can be blended in as pseudo-counts so rare characters are not
guessed from a handful of users.
Characters the model has never seen carry no evidence: such a name gets the
class prior. The output is P(male) in [0, 1]; turning it into a label is a
threshold in conf/models.yaml.

The seed's figures (国庆 0.95, 爱华 0.55) are not what the register says for
a shop with as many men as women: 爱 is three times as frequent in women's
names as in men's (per character of each gender) and 华 is even, so 爱华 is
0.24 male at even odds and 0.20 with the generator's 45 % men; ngender's own
0.38 uses its register's two-thirds men as the prior, and 0.55 is the two
characters' odds multiplied, which counts that prior twice. The model gives
the posterior for our users; a name is "near the middle" relative to the
clear ones (国庆 0.93, 婷婷 0.004), not at 0.5.
"""
from __future__ import annotations

import importlib.resources
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import special

MALE, FEMALE = "M", "F"


def _is_han(char: str) -> bool:
    """CJK unified ideographs: the basic block, extension A, and extensions B onwards."""
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf" or "\U00020000" <= char <= "\U0003134f"


def given_name(name: str | None, compound_surnames: frozenset[str] | set[str]) -> str:
    """The Han characters of the given name: the name without its surname (欧阳娜娜 -> 娜娜, 王国庆 -> 国庆)."""
    if not isinstance(name, str):
        return ""
    name = name.strip()
    surname_length = 2 if name[:2] in compound_surnames and len(name) > 2 else 1
    return "".join(c for c in name[surname_length:] if _is_han(c))


def charfreq_prior() -> pd.DataFrame:
    """ngender's per-character counts in male and female names: columns char, male, female."""
    table = pd.read_csv(importlib.resources.files("ngender") / "charfreq.csv", dtype={"char": str})
    return table[table["char"].str.len() == 1].reset_index(drop=True)


@dataclass(frozen=True)
class GenderModel:
    """Log prior odds of male and, per known character, log P(char | M) - log P(char | F)."""

    log_prior_odds: float
    char_log_ratio: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GenderModel:
        return cls(float(values["log_prior_odds"]), {str(k): float(v) for k, v in values["char_log_ratio"].items()})


def train(
    names: pd.Series,
    genders: pd.Series,
    compound_surnames: frozenset[str] | set[str],
    smoothing: float = 1.0,
    prior: pd.DataFrame | None = None,
    prior_weight: float = 0.0,
) -> GenderModel:
    """Fit on the users whose gender is M or F; the others are ignored.

    ``prior`` (char, male, female counts) enters as ``prior_weight``
    pseudo-characters per gender with its mix of characters, so rare ones are
    not judged from a handful of users; with ``prior_weight`` 0 the model is
    learnt from the data alone. The class prior comes from the labelled users
    only: a register's share of men says how it was compiled, not who our
    users are (ngender's register is two-thirds male characters, which made
    P(male) 0.12 too high on average on generated users with 46 % men).
    """
    labelled = pd.DataFrame({"name": names.to_numpy(), "gender": genders.to_numpy()})
    labelled = labelled[labelled["gender"].isin([MALE, FEMALE])]
    chars = labelled.assign(char=labelled["name"].map(lambda n: list(given_name(n, compound_surnames)))).explode("char")
    chars = chars.dropna(subset=["char"])
    counts = chars.groupby(["char", "gender"]).size().unstack(fill_value=0).reindex(columns=[MALE, FEMALE], fill_value=0)
    counts = counts.astype(float)
    if prior is not None and prior_weight > 0:
        pseudo = prior.set_index("char")[["male", "female"]].astype(float)
        pseudo = pseudo / pseudo.sum() * prior_weight
        pseudo.columns = [MALE, FEMALE]
        counts = counts.add(pseudo, fill_value=0.0)
    if counts.empty:
        raise ValueError("no characters to learn from: no user with a reported gender and no prior")
    log_p = np.log(counts + smoothing) - np.log(counts.sum() + smoothing * len(counts))
    men, women = (labelled["gender"] == MALE).sum(), (labelled["gender"] == FEMALE).sum()
    return GenderModel(
        log_prior_odds=float(np.log(men + smoothing) - np.log(women + smoothing)),
        char_log_ratio=(log_p[MALE] - log_p[FEMALE]).to_dict(),
    )


def p_male(model: GenderModel, names: pd.Series, compound_surnames: frozenset[str] | set[str]) -> np.ndarray:
    """P(male | given name) for each name; names with no known character get the prior."""
    ratio = model.char_log_ratio
    log_odds = np.fromiter(
        (model.log_prior_odds + sum(ratio.get(c, 0.0) for c in given_name(n, compound_surnames)) for n in names),
        dtype=float,
        count=len(names),
    )
    return special.expit(log_odds)
