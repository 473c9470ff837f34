"""A real HTTP server on loopback that serves files and injects faults: 503 answers, a connection
dropped mid-body, a server that ignores Range."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager

FAST = dict(retries=4, backoff_s=0.01, timeout_s=10)


class FaultyHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    faults: dict[str, list[str]] = {}  # per path, consumed one per request: "503", "drop", "norange"
    requests: list[tuple[str, str | None]] = []

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
        start = 0
        rng = self.headers.get("Range")
        if rng and fault != "norange":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if fault == "drop":  # half the body, then the connection goes away
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(payload)


@contextmanager
def serve(files: dict[str, bytes], faults: dict[str, list[str]] | None = None):
    FaultyHandler.files = files
    FaultyHandler.faults = {k: list(v) for k, v in (faults or {}).items()}
    FaultyHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FaultyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
