"""A loopback HTTP peer that answers what qdrant-client asks and records every call (no
Qdrant server can run here)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeQdrant:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n)) if n else {}
                outer.calls.append((self.command, self.path, body))
                if self.path.endswith("/points/query"):
                    point = {
                        "id": "00000000-0000-0000-0000-000000000001",
                        "version": 1,
                        "score": 0.5,
                        "payload": {
                            "doc_id": "cards-pin#0",
                            "title": "PIN",
                            "text": "t",
                            "product": "cards",
                        },
                    }
                    self._reply({"result": {"points": [point]}, "status": "ok", "time": 0})
                elif self.command == "GET":
                    self._reply({"title": "qdrant", "version": "1.20.0"})
                elif self.path.endswith("/collections/ragpacer"):
                    self._reply({"result": True, "status": "ok", "time": 0})
                else:  # upserts and index creation answer with an UpdateResult
                    self._reply({"result": {"operation_id": 1, "status": "completed"},
                                 "status": "ok", "time": 0})

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
