"""Gender from names: seed cases, learning from labelled users, whole-name back-off, unseen characters, surnames."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy import special
from sklearn.metrics import roc_auc_score

from portrait.core.config import Conf
from portrait.devtools.generate import DirtRates, generate, read_truth
from portrait.models import gender, load_settings
from portrait.models.gender import GenderModel

COMPOUND = frozenset({"欧阳", "司马", "诸葛", "上官"})
UNSEEN = "靐齉"  # in neither the register nor any training name


def names(*given: str, surname: str = "王") -> pd.Series:
    return pd.Series([surname + g for g in given])


@pytest.fixture(scope="module")
def register():
    return gender.charfreq_prior()


def test_seed_names_with_the_register_as_prior(register):
    """国庆/利民 strongly male, 婷婷/莹莹 strongly female, 爱华 ambiguous (seed: 国庆 0.95, 爱华 0.55).

    With as many men as women, the register's character odds put 利民 at 0.87
    and 爱华 at 0.24 (爱 is a female character 1.6 : 1); ngender's own 0.93
    and 0.38 come from its register being two-thirds men, which is not a fact
    about our users. 爱华 is still far nearer the middle than 国庆 or 婷婷.
    """
    labelled = pd.DataFrame({"name": ["张伟", "李强", "王芳", "刘丽"], "gender": ["M", "M", "F", "F"]})
    model = gender.train(labelled["name"], labelled["gender"], COMPOUND, prior=register, prior_weight=1e6)
    p = dict(zip(["国庆", "利民", "婷婷", "莹莹", "爱华"], gender.p_male(model, names("国庆", "利民", "婷婷", "莹莹", "爱华"), COMPOUND)))
    assert p["国庆"] > 0.9 and p["利民"] > 0.85
    assert p["婷婷"] < 0.1 and p["莹莹"] < 0.1
    assert 0.15 < p["爱华"] < 0.5


def test_the_share_of_men_comes_from_our_users_not_the_register(register):
    more_men = gender.train(names("伟", "强", "刚", "芳"), pd.Series(["M", "M", "M", "F"]), COMPOUND, prior=register, prior_weight=1e6)
    assert more_men.log_prior_odds == pytest.approx(np.log(4 / 2))  # Laplace: (3 + 1) / (1 + 1)
    assert gender.p_male(more_men, names("利民"), COMPOUND)[0] > 0.9


def test_learns_from_labelled_users_alone():
    labelled = pd.DataFrame(
        {
            "name": ["张刚强", "李刚", "赵强", "王勇刚", "陈娜", "周丽娜", "吴丽", "郑娜丽", "孙明", "钱明"],
            "gender": ["M", "M", "M", "M", "F", "F", "F", "F", "M", "F"],  # 明 is shared: no evidence either way
        }
    )
    model = gender.train(labelled["name"], labelled["gender"], COMPOUND)
    p = gender.p_male(model, names("刚", "强勇", "丽娜", "娜", "明"), COMPOUND)
    assert p[0] > 0.75 and p[1] > 0.75
    assert p[2] < 0.25 and p[3] < 0.25
    assert p[4] == pytest.approx(special.expit(model.log_prior_odds), abs=0.02)


def test_recovers_gender_on_register_like_names_with_noisy_reports(register):
    """Like the generator: given names drawn per gender from the register, 40 % unreported, 5 % wrong."""
    rng = np.random.default_rng(3)
    chars = register["char"].to_numpy()
    male, female = (register[c].to_numpy(float) / register[c].sum() for c in ("male", "female"))
    truth = np.where(rng.random(3000) < 0.55, "F", "M")
    given = ["".join(rng.choice(chars, 2, p=male if g == "M" else female)) for g in truth]
    reported = np.where(rng.random(3000) < 0.05, np.where(truth == "M", "F", "M"), truth)
    reported = np.where(rng.random(3000) < 0.4, None, reported)
    users = pd.DataFrame({"name": ["李" + g for g in given], "gender": reported, "truth": truth})
    train, test = users.iloc[:2000], users.iloc[2000:]
    model = gender.train(train["name"], train["gender"], COMPOUND)  # data alone
    p = gender.p_male(model, test["name"], COMPOUND)
    assert roc_auc_score(test["truth"] == "M", p) > 0.85
    assert ((p >= 0) & (p <= 1)).all()


def test_a_name_seen_among_labelled_users_backs_off_from_its_characters_to_its_counts():
    """k = 2: 国庆 of 3 labelled users (2 men) is (2 + 2 p) / (3 + 2); 建国 (seen once) and 丽 (one character) are p."""
    labelled = pd.DataFrame(
        {
            "name": ["王国庆", "李国庆", "张国庆", "赵建国", "陈丽", "周丽", "吴刚", "郑娜"],
            "gender": ["M", "M", "F", "M", "F", "F", "M", None],
        }
    )
    model = gender.train(labelled["name"], labelled["gender"], COMPOUND, name_weight=2)
    assert model.name_counts == {"国庆": (2, 1)}  # 丽's two women are in its character's counts already
    characters_only = replace(model, name_counts={})
    probe = names("国庆", "建国", "丽")
    by_chars = gender.p_male(characters_only, probe, COMPOUND)
    p = gender.p_male(model, probe, COMPOUND)
    assert p[0] == pytest.approx((2 + 2 * by_chars[0]) / (3 + 2))
    np.testing.assert_allclose(p[1:], by_chars[1:])


def test_unseen_characters_give_the_prior(register):
    model = gender.train(pd.Series(["张伟", "王芳", "李娜"]), pd.Series(["M", "F", "F"]), COMPOUND, prior=register, prior_weight=1e4)
    prior = special.expit(model.log_prior_odds)
    p = gender.p_male(model, pd.Series([f"王{UNSEEN}", "王", None, "Chance"]), COMPOUND)
    np.testing.assert_allclose(p, prior)


def test_unlabelled_and_invalid_genders_are_not_learnt_from():
    model = gender.train(pd.Series(["张伟", "王芳", "李刚", "赵娜"]), pd.Series(["M", "F", None, "X"]), COMPOUND)
    assert set(model.char_log_ratio) == {"伟", "芳"}


def test_compound_surnames_are_stripped():
    assert gender.given_name("欧阳娜娜", COMPOUND) == "娜娜"
    assert gender.given_name("上官婉儿", COMPOUND) == "婉儿"
    assert gender.given_name("王国庆", COMPOUND) == "国庆"
    assert gender.given_name("司马", COMPOUND) == "马"  # two characters: surname 司, given name 马
    assert gender.given_name(" 李 A娜 ", COMPOUND) == "娜"
    model = gender.train(pd.Series(["张伟", "王娜"]), pd.Series(["M", "F"]), COMPOUND)
    assert gender.p_male(model, pd.Series(["欧阳娜"]), COMPOUND)[0] == gender.p_male(model, pd.Series(["王娜"]), COMPOUND)[0]


def test_no_evidence_at_all_is_refused():
    with pytest.raises(ValueError, match="no characters"):
        gender.train(pd.Series(["王"]), pd.Series([None]), COMPOUND)


def test_model_round_trips_through_json(register):
    model = gender.train(
        pd.Series(["张伟", "王芳", "李爱华", "赵爱华"]),
        pd.Series(["M", "F", "M", "M"]),
        COMPOUND,
        prior=register,
        prior_weight=100,
        name_weight=3,
    )
    again = GenderModel.from_dict(json.loads(json.dumps(model.to_dict(), ensure_ascii=False)))
    assert again == model and again.name_counts == {"爱华": (2, 0)}
    probe = names("国庆", "婷婷", "爱华")
    np.testing.assert_allclose(gender.p_male(again, probe, COMPOUND), gender.p_male(model, probe, COMPOUND))


SEED_NAMES = ["国庆", "利民", "婷婷", "莹莹", "爱华"]


@pytest.fixture(scope="module")
def generated_users(tmp_path_factory):
    """20,000 users of the generator (names drawn per true gender: whole or from the register), as they land, with the truth.

    20,000 so that each common whole name has dozens of labelled users: with
    4,000 the seed names' figures moved by +-0.15 from one generator seed to
    the next (measured on seeds 1-8), and the test would pass on one seed only.
    """
    lake = tmp_path_factory.mktemp("gender_lake")
    generate(lake, users=20000, days=1, seed=3, end_date=date(2026, 9, 30), dirt=DirtRates(**{f.name: 0.0 for f in fields(DirtRates)}))
    lines = [json.loads(line) for part in sorted((lake / "landing" / "users").rglob("*.jsonl")) for line in part.open(encoding="utf-8")]
    users = pd.DataFrame(lines)[["user_id", "name", "gender"]]
    return users.merge(read_truth(lake)[["user_id", "true_gender"]], on="user_id")


def bayes_p_male(register: pd.DataFrame, given: str, share_of_men: float) -> float:
    """P(male | given name) in a world drawing each character from the register's per-gender frequencies."""
    table = register.set_index("char")
    male = np.prod([table.loc[c, "male"] / register["male"].sum() for c in given])
    female = np.prod([table.loc[c, "female"] / register["female"].sum() for c in given])
    return share_of_men * male / (share_of_men * male + (1 - share_of_men) * female)


def test_the_stage_model_on_generated_users(generated_users, register):
    """Trained as the model stage trains it (conf settings, the register as prior) on the generator's users.

    国庆/婷婷/爱华 are among the generator's common whole names (95 %, 2 %, 55 %
    men), so the back-off to their own labelled users moves 爱华 from its
    characters' 0.25 to the middle. 利民 and 莹莹 are not: their characters are
    drawn one by one from ngender's register, so the world itself puts 利民 at
    the Bayes posterior of those characters with the generator's 45 % men, 0.86
    (strongly male, but not 0.9: the model reports it rather than forcing it).
    """
    settings = load_settings(Conf())["gender"]
    surnames = frozenset(settings["compound_surnames"])
    train, test = generated_users.iloc[:10000], generated_users.iloc[10000:]
    model = gender.train(
        train["name"],
        train["gender"],
        surnames,
        smoothing=settings["smoothing"],
        prior=register,
        prior_weight=settings["prior_weight"],
        name_weight=settings["name_weight"],
        min_name_users=settings["min_name_users"],
    )
    p = gender.p_male(model, test["name"], surnames)
    male = (test["true_gender"] == "M").to_numpy()
    assert roc_auc_score(male, p) >= 0.90
    unreported = test["gender"].isna().to_numpy()
    assert roc_auc_score(male[unreported], p[unreported]) >= 0.88
    assert p.mean() == pytest.approx(male.mean(), abs=0.02)  # calibrated on average

    seed = dict(zip(SEED_NAMES, gender.p_male(model, names(*SEED_NAMES), surnames)))
    # Bounds that held on generator seeds 1-8 (国庆 0.85-0.96, 婷婷 <= 0.13, 爱华 0.38-0.74): wrong
    # self-reports (8.5 % in the generator) pull every name's labelled share towards 0.5, so 国庆's
    # learnt 0.87-0.96 sits below its true 0.95 on most seeds.
    assert seed["国庆"] >= 0.85 and seed["婷婷"] <= 0.15 and seed["莹莹"] <= 0.15
    assert 0.35 <= seed["爱华"] <= 0.75
    assert gender.p_male(replace(model, name_counts={}), names("爱华"), surnames)[0] < 0.3  # the back-off moved it
    share_of_men = (generated_users["true_gender"] == "M").mean()
    assert seed["利民"] == pytest.approx(bayes_p_male(register, "利民", share_of_men), abs=0.05)
    assert min(seed, key=lambda n: abs(seed[n] - 0.5)) == "爱华"  # the least certain of the seed's names
