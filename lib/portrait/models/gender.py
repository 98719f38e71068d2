"""Gender from the given name: naive Bayes over its characters, backed off to whole names.

Seed: 国庆/利民 male, 婷婷/莹莹 female, 爱华 either.

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

Real names are not drawn character by character: common whole given names
recur, and their own share of men is the best evidence about them. 爱 is three
times as frequent in women's names as in men's and 华 is even, so the
characters put 爱华 at 0.24 male with as many men as women, yet as a whole name
it is unisex (seed: 55 %). So a given name seen among enough labelled users
backs off from its characters to its own counts (:func:`p_male`), which is
how 爱华 comes out near the middle while 国庆 and 婷婷 stay clear.
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
    """Log prior odds of male, per known character log P(char | M) - log P(char | F),
    and the (men, women) among labelled users of each given name seen often enough."""

    log_prior_odds: float
    char_log_ratio: dict[str, float]
    name_counts: dict[str, tuple[int, int]]
    name_weight: float  # k: a seen name's characters count as this many labelled users

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GenderModel:
        return cls(
            float(values["log_prior_odds"]),
            {str(k): float(v) for k, v in values["char_log_ratio"].items()},
            {str(k): (int(m), int(f)) for k, (m, f) in values["name_counts"].items()},
            float(values["name_weight"]),
        )


def train(names: pd.Series, genders: pd.Series, compound_surnames: frozenset[str] | set[str], **fit) -> GenderModel:
    """Fit on the users whose gender is M or F; the others are ignored.

    ``fit``: the settings of :func:`train_on_counts` (smoothing, prior,
    prior_weight, name_weight, min_name_users). ``prior`` (char, male, female
    counts) enters as ``prior_weight`` pseudo-characters per gender with its mix
    of characters, so rare ones are not judged from a handful of users; with
    ``prior_weight`` 0 the model is learnt from the data alone. The class prior
    comes from the labelled users only: a register's share of men says how it
    was compiled, not who our users are (ngender's register is two-thirds male
    characters, which made P(male) 0.12 too high on average on generated users
    with 46 % men). Given names of two characters or more and at least
    ``min_name_users`` labelled users keep their counts for the whole-name
    back-off of :func:`p_male` (``name_weight`` k); a one-character name is its
    character, whose users the character counts already hold.
    """
    users = pd.DataFrame({"name": names.to_numpy(), "gender": genders.to_numpy()})
    return train_on_counts(given_name_counts(users, compound_surnames), **fit)


def given_name_counts(users: pd.DataFrame, compound_surnames: frozenset[str] | set[str]) -> pd.DataFrame:
    """Labelled users per (given, gender) of a batch of users (name, gender): what :func:`train_on_counts` needs.

    The job runs it on the engine batch by batch and sums ``users`` there, so
    the driver holds one row per distinct given name and gender, not per user.
    """
    labelled = users[users["gender"].isin([MALE, FEMALE])]
    given = labelled["name"].map(lambda n: given_name(n, compound_surnames))
    frame = pd.DataFrame({"given": given.to_numpy(dtype=object), "gender": labelled["gender"].to_numpy(dtype=object)})
    return frame.groupby(["given", "gender"]).size().rename("users").reset_index().astype({"users": "int64"})


def train_on_counts(
    counts: pd.DataFrame,
    smoothing: float = 1.0,
    prior: pd.DataFrame | None = None,
    prior_weight: float = 0.0,
    name_weight: float = 0.0,
    min_name_users: int = 2,
) -> GenderModel:
    """:func:`train` from labelled users per (given, gender, users): the sufficient statistics of the model."""
    counts = counts[counts["gender"].isin([MALE, FEMALE]) & (counts["users"] > 0)]
    chars = counts.assign(char=counts["given"].map(list)).explode("char").dropna(subset=["char"])
    char_counts = chars.groupby(["char", "gender"])["users"].sum().unstack(fill_value=0).reindex(columns=[MALE, FEMALE], fill_value=0)
    char_counts = char_counts.astype(float)
    if prior is not None and prior_weight > 0:
        pseudo = prior.set_index("char")[["male", "female"]].astype(float)
        pseudo = pseudo / pseudo.sum() * prior_weight
        pseudo.columns = [MALE, FEMALE]
        char_counts = char_counts.add(pseudo, fill_value=0.0)
    if char_counts.empty:
        raise ValueError("no characters to learn from: no user with a reported gender and no prior")
    log_p = np.log(char_counts + smoothing) - np.log(char_counts.sum() + smoothing * len(char_counts))
    men, women = (counts.loc[counts["gender"] == g, "users"].sum() for g in (MALE, FEMALE))
    named = counts[counts["given"].str.len() >= 2]
    per_name = named.groupby(["given", "gender"])["users"].sum().unstack(fill_value=0).reindex(columns=[MALE, FEMALE], fill_value=0)
    per_name = per_name[per_name.sum(axis=1) >= min_name_users]
    return GenderModel(
        log_prior_odds=float(np.log(men + smoothing) - np.log(women + smoothing)),
        char_log_ratio=(log_p[MALE] - log_p[FEMALE]).to_dict(),
        name_counts={name: (int(m), int(f)) for name, m, f in per_name.itertuples()},
        name_weight=float(name_weight),
    )


def p_male(model: GenderModel, names: pd.Series, compound_surnames: frozenset[str] | set[str]) -> np.ndarray:
    """P(male | given name) for each name: the characters' naive Bayes, backed off to the name's own counts.

    For a given name with n labelled users, m of them men, P = (m + k p) / (n + k)
    where p is the characters' posterior: the characters are k pseudo-users, so
    a name's own users outweigh them once there are more than k. Names with no
    known character get the class prior.
    """
    ratio, k = model.char_log_ratio, model.name_weight
    given = [given_name(n, compound_surnames) for n in names]
    by_chars = special.expit(
        np.fromiter((model.log_prior_odds + sum(ratio.get(c, 0.0) for c in g) for g in given), dtype=float, count=len(given))
    )
    seen = [model.name_counts.get(g, (0, 0)) for g in given]
    men = np.array([m for m, _ in seen], dtype=float)
    users = np.array([m + f for m, f in seen], dtype=float)
    return np.where(users > 0, (men + k * by_chars) / np.maximum(users + k, 1e-12), by_chars)
