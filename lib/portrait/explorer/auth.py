"""Accounts of the explorer: one JSON file under the lake, tokens hashed with scrypt.

``{lake}/_explorer/users.json`` holds, per account, its role (conf/explorer.yaml
``roles``) and the scrypt hash and salt of its token - never the token. A
token reads ``{account}.{secret}``: the account part finds the row, the secret
is checked against the hash in constant time. People log in with account and
token on the login page (a session cookie follows); services send
``Authorization: Bearer {token}``. ``portrait users add|remove|token`` manage
the file; the server re-reads it when it changes, so a removed account or a
rotated token stops working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ACCOUNT = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class AccessError(ValueError):
    """A bad account name, role or store."""


@dataclass(frozen=True)
class Principal:
    account: str
    role: str
    personal: bool  # may see personal fields in clear


def store_path(lake: str) -> Path:
    return Path(lake) / "_explorer" / "users.json"


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, **SCRYPT).hex()


class Users:
    """The account file of one lake, for the CLI and the server."""

    def __init__(self, lake: str, roles: dict[str, dict]):
        self.path = store_path(lake)
        self.roles = roles
        self._lock = threading.Lock()
        self._stamp = None
        self._accounts: dict[str, dict] = {}
        self._verified: dict[str, tuple[str, str]] = {}  # sha256(token) -> (account, hash it matched)

    # -------------------------------------------------------------- the file

    def accounts(self) -> dict[str, dict]:
        """account -> {role, salt, hash, created}; re-read when the file changed."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._accounts = json.loads(self.path.read_text(encoding="utf-8"))["accounts"] if stamp else {}
                self._stamp = stamp
                self._verified.clear()
            return self._accounts

    def _write(self, accounts: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + f".{os.getpid()}.partial")
        partial.write_text(json.dumps({"accounts": accounts}, indent=2, sort_keys=True), encoding="utf-8")
        os.chmod(partial, 0o600)
        partial.replace(self.path)

    def add(self, account: str, role: str) -> str:
        """Create ``account`` with ``role``; returns its token (shown once, stored only as a hash)."""
        if not ACCOUNT.match(account):
            raise AccessError(f"account name {account!r}: lower-case letters, digits, _ and -, starting with a letter (at most 32)")
        if role not in self.roles:
            raise AccessError(f"unknown role {role!r}; roles (conf/explorer.yaml): {', '.join(self.roles)}")
        accounts = dict(self.accounts())
        if account in accounts:
            raise AccessError(f"account {account!r} exists; `portrait users token {account}` gives it a new token")
        accounts[account] = {"role": role, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return self._new_token(accounts, account)

    def token(self, account: str) -> str:
        """A new token for ``account``; the old one stops working."""
        accounts = dict(self.accounts())
        if account not in accounts:
            raise AccessError(f"no account {account!r} in {self.path}")
        return self._new_token(accounts, account)

    def remove(self, account: str) -> None:
        accounts = dict(self.accounts())
        if accounts.pop(account, None) is None:
            raise AccessError(f"no account {account!r} in {self.path}")
        self._write(accounts)

    def _new_token(self, accounts: dict[str, dict], account: str) -> str:
        secret = secrets.token_urlsafe(24)
        salt = secrets.token_bytes(16)
        accounts[account] = {**accounts[account], "salt": salt.hex(), "hash": _hash(secret, salt)}
        self._write(accounts)
        return f"{account}.{secret}"

    # ---------------------------------------------------------- checking

    def check(self, token: str | None) -> Principal | None:
        """The principal a token belongs to, or None.

        scrypt costs tens of milliseconds by design; a token already verified
        against the current hash is remembered (by its SHA-256, in memory only)
        so that API calls stay fast. A changed file forgets them all.
        """
        if not token or "." not in token or len(token) > 200:
            return None
        account, secret = token.split(".", 1)
        row = self.accounts().get(account)
        if row is None or "hash" not in row or row.get("role") not in self.roles:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        known = self._verified.get(digest)
        if known is None or known[1] != row["hash"]:
            if not hmac.compare_digest(_hash(secret, bytes.fromhex(row["salt"])), row["hash"]):
                return None
            self._verified[digest] = (account, row["hash"])
        return Principal(account, row["role"], bool(self.roles[row["role"]].get("personal")))


class Sessions:
    """Logins of people: a random session id in an HttpOnly cookie -> the principal, in memory."""

    def __init__(self, hours: float):
        self.seconds = hours * 3600
        self._sessions: dict[str, tuple[Principal, float, str]] = {}
        self._lock = threading.Lock()

    def open(self, principal: Principal, token_hash: str) -> str:
        """A session for ``principal``, valid while the account keeps the token hash it logged in with."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = (principal, time.monotonic() + self.seconds, token_hash)
        return sid

    def get(self, sid: str | None) -> tuple[Principal, str] | None:
        """(principal, the token hash it logged in with) of a live session, else None."""
        if not sid:
            return None
        with self._lock:
            found = self._sessions.get(sid)
            if found is None:
                return None
            if found[1] < time.monotonic():
                del self._sessions[sid]
                return None
            return found[0], found[2]

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)
