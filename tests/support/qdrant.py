"""A loopback HTTP peer that answers what qdrant-client asks and records every call (no
Qdrant server can run here)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeQdrant:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.aliases: dict[str, str] = {}  # alias -> collection, as GET /aliases reports
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
                elif self.path.endswith("/aliases") and self.command == "GET":
                    aliases = [{"alias_name": a, "collection_name": c}
                               for a, c in outer.aliases.items()]
                    self._reply({"result": {"aliases": aliases}, "status": "ok", "time": 0})
                elif self.command == "GET":
                    self._reply({"title": "qdrant", "version": "1.20.0"})
                elif (self.path.split("?")[0].count("/") == 2
                      or self.path.startswith("/collections/aliases")):
                    # creating, deleting a collection or changing aliases: a bool result
                    self._reply({"result": True, "status": "ok", "time": 0})
                else:  # upserts and index creation answer with an UpdateResult
                    self._reply({"result": {"operation_id": 1, "status": "completed"},
                                 "status": "ok", "time": 0})

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
