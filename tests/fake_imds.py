"""A small stand-in for EC2's instance metadata service (IMDSv2) on 127.0.0.1: a session token
from PUT /latest/api/token, then /latest/meta-data/spot/instance-action answers 404 until the
test arms a notice, and 401 without the token (as IMDSv2 does)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "fake-imds-token"


class FakeImds:
    def __init__(self) -> None:
        self.notice: dict | None = None
        self.token_requests = 0
        self.polls = 0
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    imds.token_requests += 1
                    return self._send(200, TOKEN)
                return self._send(400)

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    return self._send(401)
                if self.path == "/latest/meta-data/spot/instance-action":
                    imds.polls += 1
                    return self._send(200, json.dumps(imds.notice)) if imds.notice else self._send(404)
                return self._send(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def arm(self, action: str = "terminate", time: str = "2026-11-23T20:00:00Z") -> None:
        self.notice = {"action": action, "time": time}

    def __enter__(self) -> "FakeImds":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
