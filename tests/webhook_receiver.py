"""A real HTTP server that takes webhook POSTs like Slack's incoming webhooks do, for the
alert tests: it keeps every JSON body it received, answers 200 (or the status it is told),
after ``delay_s`` (a slow chat service)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(self):
        self.bodies: list[dict] = []
        self.status = 200
        self.delay_s = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                time.sleep(receiver.delay_s)
                status = receiver.status
                if status == 200:
                    with receiver._lock:
                        receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"refused")

            def log_message(self, *args):  # quiet test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/alerts"

    def texts(self) -> list[str]:
        with self._lock:
            return [body["text"] for body in self.bodies]

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
