"""An HTTP endpoint on 127.0.0.1 in front of another (a local AWS Batch) that injects faults into
chosen calls: throttling, bursts of server errors, connections reset mid-call, calls that hang.

Owns the faults and the counts of what it did; every other request is forwarded unchanged.
"""

from __future__ import annotations

import http.server
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from email.message import Message
from types import TracebackType
from typing import Literal

FaultKind = Literal["throttle", "server_error", "reset", "hang"]

SERVER_ERRORS = (500, 502, 503, 504)
"""The statuses a `server_error` fault answers, in turn."""


@dataclass(frozen=True)
class Fault:
    """What a faulty path does, for `seconds` from the first request it hits or for `count`
    requests (None: until healed).

    - `throttle`: HTTP 429 `TooManyRequestsException`, as AWS Batch answers callers too fast;
    - `server_error`: HTTP 500, 502, 503 and 504 in turn;
    - `reset`: the connection reset (RST), before the request is forwarded, or with
      `after_forwarding` once the target has carried it out and half its answer is sent;
    - `hang`: no answer while the fault lasts; then the request is forwarded (or dropped
      without an answer if the endpoint closes first).
    """

    kind: FaultKind
    seconds: float | None = None
    count: int | None = None
    after_forwarding: bool = False


@dataclass
class _Active:
    fault: Fault
    hits: int = 0
    first_hit: float | None = None
    healed: threading.Event = field(default_factory=threading.Event)

    def lasts(self, now: float) -> bool:
        """Whether the fault hits a new request: not healed, within its time and its count."""
        if self.fault.count is not None and self.hits >= self.fault.count:
            return False
        return self.holds(now)

    def holds(self, now: float) -> bool:
        """Whether the requests it hung are still held: not healed, within its time."""
        if self.healed.is_set():
            return False
        seconds = self.fault.seconds
        return seconds is None or self.first_hit is None or now - self.first_hit < seconds


class FaultyEndpoint:
    """Forwards every request to `target`, except those `inject` aims faults at (by path, such
    as `/v1/submitjob`). `injected` counts the requests each fault hit, by (path, kind);
    `forwarded` the requests that reached the target, by path; `held` those hanging now.

    Example (in a test):
        with FaultyEndpoint(local.endpoint_url) as endpoint:
            endpoint.inject("/v1/submitjob", Fault("throttle", seconds=10))
            aws = AWSConfig(region="us-east-1", endpoint_url=endpoint.url, credentials=...)
    """

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.injected: Counter[tuple[str, FaultKind]] = Counter()
        self.forwarded: Counter[str] = Counter()
        self.held = 0
        self._faults: dict[str, _Active] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                path = self.path.rstrip("/").lower()
                fault = endpoint._hit(path)
                if fault is None or fault.kind == "hang":
                    if fault is not None and not endpoint._hold(path):
                        return self._reset()  # the endpoint closes: no answer ever
                    status, headers, reply = endpoint._forward(self.path, self.headers, body)
                    return self._answer(status, headers, reply)
                if fault.kind == "throttle":
                    return self._error(429, "TooManyRequestsException", "Too Many Requests")
                if fault.kind == "server_error":
                    status = SERVER_ERRORS[(endpoint.injected[path, fault.kind] - 1) % 4]
                    return self._error(status, "ServerException", "Internal Server Error")
                if fault.after_forwarding:
                    status, headers, reply = endpoint._forward(self.path, self.headers, body)
                    self._answer(status, headers, reply, cut=True)
                return self._reset()

            def _error(self, status: int, code: str, message: str) -> None:
                reply = json.dumps({"message": message}).encode()
                headers = {"Content-Type": "application/json", "x-amzn-ErrorType": code}
                self._answer(status, headers, reply)

            def _answer(
                self, status: int, headers: dict[str, str], reply: bytes, cut: bool = False
            ) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply[: len(reply) // 2] if cut else reply)
                self.wfile.flush()

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST, as a crashed proxy or load balancer does.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that gave up on a held request, a connection reset on purpose

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def inject(self, path: str, fault: Fault) -> None:
        """Make requests to `path` fail as `fault` says (replacing any fault there)."""
        with self._lock:
            previous = self._faults.get(path)
            if previous is not None:
                previous.healed.set()
            self._faults[path] = _Active(fault)

    def heal(self, path: str | None = None) -> None:
        """Lift the fault of `path` (None: every fault); held requests go on to the target."""
        with self._lock:
            for key in [path] if path is not None else list(self._faults):
                active = self._faults.pop(key, None)
                if active is not None:
                    active.healed.set()

    def _hit(self, path: str) -> Fault | None:
        with self._lock:
            active = self._faults.get(path)
            now = time.monotonic()
            if active is None or not active.lasts(now):
                return None
            active.hits += 1
            if active.first_hit is None:
                active.first_hit = now
            self.injected[path, active.fault.kind] += 1
            return active.fault

    def _hold(self, path: str) -> bool:
        """Hold a request while the hang lasts; False if the endpoint closes meanwhile."""
        with self._lock:
            self.held += 1
            active = self._faults.get(path)
        try:
            while active is not None and active.holds(time.monotonic()):
                if self._closing.is_set():
                    return False
                active.healed.wait(0.02)
            return not self._closing.is_set()
        finally:
            with self._lock:
                self.held -= 1

    def _forward(
        self, path: str, headers: Message, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        sent = {key: value for key, value in headers.items() if key.lower() != "host"}
        request = urllib.request.Request(self.target + path, data=body, headers=sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, reply, received = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as error:
            status, reply, received = error.code, error.read(), error.headers
        with self._lock:
            self.forwarded[path.rstrip("/").lower()] += 1
        return status, dict(received.items()), reply

    def __enter__(self) -> FaultyEndpoint:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
