"""The lake's storage: everything on the lake that is not a Delta table.

A lake is a local path or an object-store URI, ``s3://bucket/prefix`` (S3 or
an S3-compatible store: MinIO, OSS, COS, Ceph). Delta tables are read and
written by the engine and by ``deltalake`` (``delta_options`` gives it the
settings); the rest - staging manifest, stage lock, model artefacts, reports,
exports, landing zone, data docs, generator output - goes through the
functions here, on local disk with plain file operations and on object
storage with ``obstore`` (the Rust ``object_store`` crate Sail and delta-rs
use themselves, so all three honour the same settings).

Settings come from the variables every S3 client reads: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), ``AWS_REGION``,
``AWS_ENDPOINT_URL`` for a non-AWS endpoint (``AWS_ALLOW_HTTP=true`` for a
plain-http one; path-style addressing unless
``AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true``). They are never logged: errors
name the lake and what is wrong, not the settings.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

SCHEMES = ("s3", "s3a")

#: How long a lock on object storage outlives a holder that died (seconds);
#: a live holder renews it every third of that.
LOCK_LEASE_SECONDS = float(os.environ.get("PORTRAIT_LOCK_LEASE_SECONDS", "60"))


class LakeError(RuntimeError):
    """The lake cannot be reached or used (one line naming the lake, never a secret)."""


class LockHeld(RuntimeError):
    """The lock is held by someone else; ``holder`` says who."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


# --------------------------------------------------------------------------- paths


def is_remote(path: str) -> bool:
    return urlparse(str(path)).scheme in SCHEMES


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *(str(p).strip("/") for p in parts if str(p))])
    return str(Path(base, *parts))


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def _split(path: str) -> tuple[str, str]:
    url = urlparse(str(path))
    return url.netloc, url.path.strip("/")


# --------------------------------------------------------------------------- settings


def _env_options() -> dict[str, str]:
    """The object-store settings from the standard AWS variables (upper-case keys, as delta-rs takes them)."""
    options = {}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST"):
        if os.environ.get(key):
            options[key] = os.environ[key]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            os.environ.setdefault("AWS_ALLOW_HTTP", "true")  # Sail reads the same variable
    if os.environ.get("AWS_ALLOW_HTTP"):
        options["AWS_ALLOW_HTTP"] = os.environ["AWS_ALLOW_HTTP"]
    return options


def delta_options(path: str) -> dict[str, str] | None:
    """``storage_options`` for ``deltalake`` on ``path`` (None on local disk)."""
    if not is_remote(path):
        return None
    options = _env_options()
    options.setdefault("AWS_CONDITIONAL_PUT", "etag")  # safe concurrent commits through If-None-Match
    return options


_stores: dict = {}
_stores_lock = threading.Lock()


def _store(bucket: str, quick: bool = False):
    from obstore.store import S3Store

    env = _env_options()
    key = (bucket, quick, tuple(sorted(env.items())))
    with _stores_lock:
        if key not in _stores:
            config = {"region": env.get("AWS_REGION", "us-east-1"), "conditional_put": "etag"}
            if "AWS_ENDPOINT_URL" in env:
                config["endpoint"] = env["AWS_ENDPOINT_URL"]
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                if name in env:
                    config[name[4:].lower()] = env[name]
            config["virtual_hosted_style_request"] = env.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false").lower() == "true"
            client = {"allow_http": env.get("AWS_ALLOW_HTTP", "false").lower() == "true", "connect_timeout": "5s"}
            retry = {"max_retries": 1, "retry_timeout": __import__("datetime").timedelta(seconds=5)} if quick else None
            _stores[key] = S3Store(bucket, config=config, client_options=client, retry_config=retry)
        return _stores[key]


def _obj(path: str):
    bucket, key = _split(path)
    return _store(bucket), key


# --------------------------------------------------------------------------- checking the lake


def check_lake(lake: str) -> None:
    """Fail with one clear line if an object-store lake cannot be listed (no-op on local disk)."""
    if not is_remote(lake):
        return
    import obstore

    bucket, prefix = _split(lake)
    try:
        obstore.list_with_delimiter(_store(bucket, quick=True), prefix or None)
    except Exception as exc:  # noqa: BLE001 - translated into one line below
        raise LakeError(f"lake {lake}: {_reason(exc, bucket)}") from None


def _reason(exc: Exception, bucket: str) -> str:
    text = str(exc)
    if "NoSuchBucket" in text or ("404" in text and "Not Found" in text):
        return f"bucket {bucket!r} does not exist"
    if any(code in text for code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403", "Forbidden")):
        return "access denied: the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) are wrong or lack permission"
    if "Missing" in text and "credential" in text.lower():
        return "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the AWS S3 endpoint"
    return f"endpoint {endpoint} cannot be reached ({type(exc).__name__}); check AWS_ENDPOINT_URL and the network"


# --------------------------------------------------------------------------- objects


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        return Path(path).read_bytes()
    import obstore

    store, key = _obj(path)
    return bytes(obstore.get(store, key).bytes())


def size(path: str) -> int | None:
    """The size of a file or object in bytes; None if it cannot be read."""
    try:
        if not is_remote(path):
            return Path(path).stat().st_size
        import obstore

        store, key = _obj(path)
        return int(obstore.head(store, key)["size"])
    except Exception:  # noqa: BLE001 - unreadable is an answer here
        return None


def open_read(path: str):
    """A binary file object on ``path`` (streamed on local disk; an object is fetched whole)."""
    if not is_remote(path):
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    import io

    return io.BytesIO(read_bytes(path))


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str):
    return json.loads(read_bytes(path))


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole object; readers see the old one or the new one, never a part."""
    if not is_remote(path):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        return
    import obstore

    store, key = _obj(path)
    obstore.put(store, key, data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextmanager
def open_write(path: str):
    """A binary file-like writer; the object appears whole when the block ends (multipart upload on object storage)."""
    if not is_remote(path):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("wb") as handle:
                yield handle
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    import obstore

    store, key = _obj(path)
    writer = obstore.open_writer(store, key)
    yield _Writer(writer)  # on an error the upload is never completed: no object appears
    writer.close()


class _Writer:
    """obstore's writer taking any bytes-like object (pyarrow buffers too)."""

    def __init__(self, writer):
        self._writer = writer

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._writer.write(view)
        return len(view)


def is_file(path: str) -> bool:
    if not is_remote(path):
        return Path(path).is_file()
    import obstore

    store, key = _obj(path)
    try:
        obstore.head(store, key)
        return True
    except FileNotFoundError:
        return False


def is_dir(path: str) -> bool:
    """Is there anything under ``path/``?"""
    if not is_remote(path):
        return Path(path).is_dir()
    import obstore

    store, key = _obj(path)
    listing = obstore.list_with_delimiter(store, key.rstrip("/") + "/")
    return bool(listing["objects"] or listing["common_prefixes"])


def list_dir(path: str) -> list[str]:
    """Names directly under ``path`` (folders and files), sorted."""
    if not is_remote(path):
        folder = Path(path)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    import obstore

    store, key = _obj(path)
    listing = obstore.list_with_delimiter(store, key.rstrip("/") + "/")
    names = [basename(p) for p in listing["common_prefixes"]] + [basename(o["path"]) for o in listing["objects"]]
    return sorted(names)


def modified_at(path: str) -> float | None:
    """When anything under ``path`` (a file or a folder) last changed, in epoch seconds; None if nothing is there."""
    if not is_remote(path):
        root = Path(path)
        if not root.exists():
            return None
        return max([root.stat().st_mtime, *(p.stat().st_mtime for p in root.rglob("*"))])
    import obstore

    store, key = _obj(path)
    times = [meta["last_modified"].timestamp() for batch in obstore.list(store, key.rstrip("/") + "/") for meta in batch]
    if not times and is_file(path):
        times = [obstore.head(store, key)["last_modified"].timestamp()]
    return max(times) if times else None


def remove(path: str) -> None:
    """Delete one file or object; nothing if it is not there."""
    if not is_remote(path):
        Path(path).unlink(missing_ok=True)
        return
    import obstore

    store, key = _obj(path)
    try:
        obstore.delete(store, key)
    except FileNotFoundError:
        pass


def remove_tree(path: str) -> None:
    """Delete ``path`` and everything under it; nothing if it is not there."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    import obstore

    store, key = _obj(path)
    keys = [meta["path"] for batch in obstore.list(store, key.rstrip("/") + "/") for meta in batch]
    for start in range(0, len(keys), 1000):
        obstore.delete(store, keys[start : start + 1000])


def upload_tree(local_dir: str, path: str) -> None:
    """Copy every file under the local ``local_dir`` to ``path`` (same relative names)."""
    root = Path(local_dir)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        write_bytes(join(path, file.relative_to(root).as_posix()), file.read_bytes())


# --------------------------------------------------------------------------- the lock


def holder_text() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"


@contextmanager
def exclusive(path: str, lease_seconds: float | None = None):
    """Hold the lock at ``path`` for the block; ``LockHeld`` at once if someone else holds it.

    Local disk: ``flock`` on the file, released by the OS when the holder dies.
    Object storage: a lock object created only if absent (``If-None-Match: *``)
    holding the holder and its lease; the holder renews the lease every third
    of it (``If-Match`` its own ETag) and deletes the object at the end. A
    holder that died leaves the object behind for at most the lease: after
    that, the next run takes it over with a PUT conditional on the stale
    object's ETag, so of two runs taking over at once only one wins.
    """
    holder = holder_text()
    if not is_remote(path):
        with _flock(path, holder):
            yield
        return
    lease = LOCK_LEASE_SECONDS if lease_seconds is None else lease_seconds
    store, key = _obj(path)
    etag = _acquire(store, key, holder, lease)
    state = {"etag": etag, "lost": False}
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(store, key, holder, lease, state, stop), daemon=True, name=f"lease {key}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        _release(store, key, state)


@contextmanager
def _flock(path: str, holder: str):
    import fcntl

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise LockHeld(handle.read().strip() or "another process") from None
        handle.truncate(0)
        handle.write(holder + "\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


def _lease_body(holder: str, lease: float) -> bytes:
    return json.dumps({"holder": holder, "lease_seconds": lease, "expires_at": time.time() + lease}).encode()


def _acquire(store, key: str, holder: str, lease: float) -> str:
    import obstore
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    try:
        return obstore.put(store, key, _lease_body(holder, lease), mode="create")["e_tag"]
    except AlreadyExistsError:
        pass
    try:
        current = obstore.get(store, key)
        stale_etag, body = current.meta["e_tag"], json.loads(bytes(current.bytes()))
    except FileNotFoundError:  # released in between: try once more
        try:
            return obstore.put(store, key, _lease_body(holder, lease), mode="create")["e_tag"]
        except AlreadyExistsError:
            raise LockHeld("another process") from None
    if time.time() < float(body.get("expires_at", 0)):
        raise LockHeld(
            f"{body.get('holder', 'another process')}, lease until {datetime.fromtimestamp(body['expires_at'], UTC):%H:%M:%S} UTC"
        )
    try:  # the holder's lease ran out: take over, unless someone else just did
        return obstore.put(store, key, _lease_body(holder, lease), mode={"e_tag": stale_etag})["e_tag"]
    except (PreconditionError, AlreadyExistsError):
        raise LockHeld("another process that took over an expired lease") from None


def _renew(store, key: str, holder: str, lease: float, state: dict, stop: threading.Event) -> None:
    import logging

    import obstore

    while not stop.wait(lease / 3):
        try:
            state["etag"] = obstore.put(store, key, _lease_body(holder, lease), mode={"e_tag": state["etag"]})["e_tag"]
        except Exception:  # noqa: BLE001 - a lost lease is logged; the holder's writes stay write-audit-publish
            state["lost"] = True
            logging.getLogger(__name__).error("lock %s: lease lost (renewal refused)", key)
            return


def _release(store, key: str, state: dict) -> None:
    import obstore

    if state["lost"]:
        return
    try:
        if obstore.head(store, key)["e_tag"] == state["etag"]:
            obstore.delete(store, key)
    except FileNotFoundError:
        pass
