"""Explorer accounts without a lake or a server: hashed tokens, rotation, removal, sessions, masking."""

from __future__ import annotations

import json
import time

import pytest

from portrait.core.config import Conf
from portrait.explorer.auth import AccessError, Principal, Sessions, Users, store_path
from portrait.explorer.details import mask_profile

ROLES = Conf().load("explorer")["roles"]


def test_tokens_are_stored_as_scrypt_hashes_and_checked(tmp_path):
    users = Users(str(tmp_path), ROLES)
    token = users.add("ana", "analyst")
    account, secret = token.split(".", 1)
    assert account == "ana" and len(secret) >= 30
    stored = store_path(str(tmp_path)).read_text()
    assert secret not in stored and json.loads(stored)["accounts"]["ana"]["role"] == "analyst"
    assert store_path(str(tmp_path)).stat().st_mode & 0o077 == 0
    assert users.check(token) == Principal("ana", "analyst", False)
    assert users.check(token) == Principal("ana", "analyst", False)  # the remembered verification
    for wrong in ("ana." + secret[:-1] + "x", "ana", "", None, "bob." + secret, "ana." + secret + "x" * 300):
        assert users.check(wrong) is None


def test_a_new_token_or_a_removal_ends_the_old_one(tmp_path):
    users = Users(str(tmp_path), ROLES)
    old = users.add("ops", "operator")
    assert users.check(old).personal
    new = Users(str(tmp_path), ROLES).token("ops")  # another process (the CLI) rotates it
    time.sleep(0.01)
    assert users.check(old) is None and users.check(new).account == "ops"
    Users(str(tmp_path), ROLES).remove("ops")
    assert users.check(new) is None


def test_bad_accounts_and_roles_are_refused(tmp_path):
    users = Users(str(tmp_path), ROLES)
    for name in ("../x", "Ana", "", "a" * 40, "a.b"):
        with pytest.raises(AccessError, match="account name"):
            users.add(name, "analyst")
    with pytest.raises(AccessError, match="unknown role 'admin'"):
        users.add("x", "admin")
    users.add("x", "analyst")
    with pytest.raises(AccessError, match="exists"):
        users.add("x", "operator")
    with pytest.raises(AccessError, match="no account"):
        users.remove("y")


def test_sessions_expire():
    sessions = Sessions(hours=0.0)
    sid = sessions.open(Principal("a", "analyst", False), "hash")
    assert sessions.get(sid) is None and sessions.get(None) is None and sessions.get("forged") is None
    live = Sessions(hours=1)
    sid = live.open(Principal("a", "analyst", False), "hash")
    assert live.get(sid) == (Principal("a", "analyst", False), "hash")
    live.close(sid)
    assert live.get(sid) is None


def test_masking_clears_names_and_addresses_only_for_the_restricted_role():
    def profile():
        return {
            "姓名": "张三",
            "社会属性": {"常用地址": {"常用地址1": {"地理名称": "杭州市", "经纬度": "30.2,120.1", "类型": "居住区", "次数": 3}}},
        }

    assert mask_profile(profile(), Principal("o", "operator", True)) == profile()
    masked = mask_profile(profile(), Principal("a", "analyst", False))
    assert masked["姓名"] is None
    assert masked["社会属性"]["常用地址"]["常用地址1"] == {"地理名称": None, "经纬度": None, "类型": "居住区", "次数": 3}
