"""A real HTTP server on loopback that serves files and injects faults: 503 answers, a connection
dropped mid-body, a server that ignores Range. It answers ranges `bytes=start-` and
`bytes=start-end`, and counts the body bytes it sends per path."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager

FAST = dict(retries=4, backoff_s=0.01, timeout_s=10)
_COUNTING = threading.Lock()  # handler threads add to bytes_sent: one at a time


class FaultyHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    faults: dict[str, list[str]] = {}  # per path, consumed one per request: "503", "drop", "norange"
    requests: list[tuple[str, str | None]] = []
    bytes_sent: dict[str, int] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        self.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        plan = self.faults.get(self.path) or []
        fault = plan.pop(0) if plan else None
        if fault == "503":
            self.send_error(503)
            return
        start, end = 0, len(body) - 1
        rng = self.headers.get("Range")
        if rng and fault != "norange":
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last), end) if last else end
            if start > end:
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end + 1 - start))
        self.end_headers()
        payload = body[start:end + 1]
        if fault == "drop":  # half the body, then the connection goes away
            payload = payload[: len(payload) // 2]
            self.send_body(payload)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send_body(payload)

    def send_body(self, payload: bytes) -> None:
        # Counted before the write: the client may ask for the count as soon as it has the bytes.
        with _COUNTING:
            self.bytes_sent[self.path] = self.bytes_sent.get(self.path, 0) + len(payload)
        self.wfile.write(payload)
        self.wfile.flush()


class LoopbackServer(http.server.ThreadingHTTPServer):
    # socketserver's backlog of 5 makes the 6th of the fetch's simultaneous connections wait a
    # second for a SYN retry.
    request_queue_size = 128


@contextmanager
def serve(files: dict[str, bytes], faults: dict[str, list[str]] | None = None):
    FaultyHandler.files = files
    FaultyHandler.faults = {k: list(v) for k, v in (faults or {}).items()}
    FaultyHandler.requests = []
    FaultyHandler.bytes_sent = {}
    server = LoopbackServer(("127.0.0.1", 0), FaultyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
