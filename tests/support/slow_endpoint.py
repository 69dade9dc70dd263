"""An HTTP endpoint on 127.0.0.1 in front of another that holds back chosen requests: an AWS
API that is slow to answer, for tests of what keeps running meanwhile."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.error
import urllib.request
from types import TracebackType


class SlowEndpoint:
    """Forwards every request to `target`; those whose path is `path` wait `delay` seconds
    first (the delay can change while they wait; `held` counts those waiting)."""

    def __init__(self, target: str, path: str, delay: float = 0.0) -> None:
        self.target = target.rstrip("/")
        self.path = path
        self.delay = delay
        self.held = 0
        self._lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path.rstrip("/").lower() == endpoint.path:
                    endpoint._hold()
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(
                    endpoint.target + self.path, data=body, headers=headers, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        status, reply, answer_headers = answer.status, answer.read(), answer.headers
                except urllib.error.HTTPError as error:
                    status, reply, answer_headers = error.code, error.read(), error.headers
                self.send_response(status)
                for key, value in answer_headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _hold(self) -> None:
        with self._lock:
            self.held += 1
        started = time.monotonic()
        try:
            while time.monotonic() - started < self.delay:
                time.sleep(0.02)  # the delay may be shortened meanwhile
        finally:
            with self._lock:
                self.held -= 1

    def __enter__(self) -> SlowEndpoint:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.delay = 0.0
        self._server.shutdown()
        self._server.server_close()
