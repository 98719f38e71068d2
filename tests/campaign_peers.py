"""Real receivers for the campaign channels, on 127.0.0.1 and a free port, started and stopped by the tests.

``WebhookPeer`` is an HTTP server that checks the HMAC signature, deduplicates
on the idempotency key (as a real receiver must) and counts everything it got:
``received`` (every delivery in every request, duplicates included) and
``keys`` (distinct). It can answer 503 a number of times, be slow, reject with
a 4xx, or hold a request (process it, then never answer) so a test can kill
the sender while it waits (:func:`kill_sender_mid_batch`). ``SmtpPeer`` is aiosmtpd's server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookPeer:
    def __init__(self, secret: bytes, fail_first: int = 0, slow_first: int = 0, delay: float = 0.0, reject: int | None = None):
        self.secret, self.fail_first, self.slow_first, self.delay, self.reject = secret, fail_first, slow_first, delay, reject
        self.requests = 0
        self.received = Counter()  # key -> deliveries received (duplicates included)
        self.processed: list[str] = []  # keys acted on, once each
        self.bad_signatures = 0
        self.hold_at: int | None = None  # the request number to process and then never answer
        self.held = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(peer.secret, body, hashlib.sha256).hexdigest()
                with peer.lock:
                    peer.requests += 1
                    number = peer.requests
                if not hmac.compare_digest(expected, self.headers.get("X-Portrait-Signature", "")):
                    peer.bad_signatures += 1
                    return self._answer(401, {"error": "bad signature"})
                if number <= peer.fail_first:
                    return self._answer(503, {"error": "busy"})
                if peer.reject is not None:
                    return self._answer(peer.reject, {"error": "refused"})
                if number <= peer.slow_first:
                    time.sleep(peer.delay)  # the sender has given up by now; the work is done all the same
                new = peer.take(json.loads(body)["deliveries"])
                if peer.hold_at == number:
                    peer.held.set()
                    peer.release.wait(60)
                    return
                self._answer(200, {"accepted": new})

            def _answer(self, code: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/deliveries"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take(self, deliveries: list[dict]) -> int:
        """Count every delivery; act on a key the first time only (idempotency)."""
        new = 0
        with self.lock:
            for d in deliveries:
                key = d["idempotency_key"]
                if self.received[key] == 0:
                    self.processed.append(key)
                    new += 1
                self.received[key] += 1
        return new

    @property
    def total(self) -> int:
        return sum(self.received.values())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def kill_sender_mid_batch(peer: WebhookPeer, batch: int, portrait_args: list[str], env: dict[str, str]) -> None:
    """Run ``portrait <portrait_args>`` (a campaign send) in a child process and SIGKILL it while it waits for request ``batch``.

    The peer processes that request and never answers it, as when a sender dies between
    the receiver's work and its acknowledgement; the peer answers normally again afterwards.
    """
    peer.hold_at = batch
    sender = subprocess.Popen(
        [sys.executable, "-m", "portrait.cli", *portrait_args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert peer.held.wait(120), sender.stderr.read() if sender.poll() is not None else f"the sender never reached request {batch}"
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait(30)
    finally:
        if sender.poll() is None:
            sender.kill()
    peer.hold_at = None
    peer.release.set()


class SmtpPeer:
    """aiosmtpd on a free port; ``messages`` are the received e-mails. A recipient in ``refuse`` gets its code."""

    def __init__(self, refuse: dict[str, int] | None = None, transient_once: set[str] | None = None):
        import socket

        from aiosmtpd.controller import Controller

        self.messages, self.refuse, self.transient_once = [], refuse or {}, set(transient_once or ())
        peer = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                user = address.split("@")[0]
                if user in peer.refuse:
                    return f"{peer.refuse[user]} mailbox unavailable"
                if user in peer.transient_once:
                    peer.transient_once.discard(user)
                    return "451 try again later"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                from email import message_from_bytes

                peer.messages.append(message_from_bytes(envelope.content))
                return "250 Message accepted"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.url = f"smtp://127.0.0.1:{port}"

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()
