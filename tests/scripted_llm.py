"""A scripted OpenAI-compatible chat server on loopback with controlled delays.

Real HTTP over a real socket, so the client's timeouts and connection closes are exercised;
only the model is scripted. It records every request body and every client that hung up
before the stream finished (which is how vLLM learns to abort a request).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Script:
    tokens: list[str] = field(default_factory=lambda: ["Freeze ", "your ", "card ", "now. [1]"])
    ttft_s: float = 0.0
    token_delay_s: float = 0.0
    status: int = 200
    error_message: str = "scripted failure"  # what a non-200 answer says
    # When the request offers tools and has no tool results yet, ask for this call first.
    tool_call: dict[str, str] | None = None


class ScriptedLLM:
    def __init__(self, script: Script | None = None, port: int = 0) -> None:
        self.script = script or Script()
        self.model_lists = 0  # GET /v1/models: health polls
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers, names lowercased
        self.disconnects = 0
        self.completed = 0
        self.port = port  # 0: any free port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wait_for_disconnect(self, timeout_s: float = 3.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.disconnects:
                return True
            time.sleep(0.01)
        return False

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(line.split(":", 1) for line in head.decode().split("\r\n")[1:]
                               if ":" in line)
                headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
                if head.startswith(b"GET ") and b"/models " in head.split(b"\r\n", 1)[0]:
                    self.model_lists += 1  # a health poll, not a completion request
                    await self._list_models(writer)
                    continue
                self.headers.append(headers)
                length = int(headers.get("content-length", 0))
                body = json.loads(await reader.readexactly(length)) if length else {}
                self.requests.append(body)
                if not await self._respond(reader, writer, body):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def _list_models(self, writer: asyncio.StreamWriter) -> None:
        """OpenAI's model list, with the script's status (a failing engine fails this too)."""
        status = self.script.status
        payload = json.dumps({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}
                             if status == 200 else {"error": {"message": "down"}}).encode()
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
        await writer.drain()

    async def _respond(self, reader, writer, body) -> bool:  # type: ignore[no-untyped-def]
        s = self.script
        if s.status != 200:
            await asyncio.sleep(s.ttft_s)  # a slow failure
            payload = json.dumps({"error": {"message": s.error_message}}).encode()
            writer.write(
                f"HTTP/1.1 {s.status} Error\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\n\r\n".encode() + payload
            )
            await writer.drain()
            return True
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            if await self._hung_up(hangup, s.ttft_s):
                return False
            answered = any(m.get("role") == "tool" for m in body.get("messages", []))
            if s.tool_call and body.get("tools") and not answered:
                args = s.tool_call["arguments"]
                for i, part in enumerate((args[: len(args) // 2], args[len(args) // 2 :])):
                    fn = {"arguments": part} | ({"name": s.tool_call["name"]} if i == 0 else {})
                    delta = {"tool_calls": [{"index": 0, "id": "call_1" if i == 0 else None,
                                             "type": "function", "function": fn}]}
                    chunk = {"choices": [{"index": 0, "delta": delta,
                                          "finish_reason": "tool_calls" if i else None}]}
                    self._chunk(writer, f"data: {json.dumps(chunk)}\n\n")
                self._chunk(writer, "data: [DONE]\n\n")
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                self.completed += 1
                return True
            tokens = s.tokens[: body.get("max_tokens", len(s.tokens))]
            for i, tok in enumerate(tokens):
                chunk = {"choices": [{"index": 0, "delta": {"content": tok},
                                      "finish_reason": "stop" if i == len(tokens) - 1 else None}]}
                self._chunk(writer, f"data: {json.dumps(chunk)}\n\n")
                await writer.drain()
                if s.token_delay_s and await self._hung_up(hangup, s.token_delay_s):
                    return False
            usage = {"choices": [], "usage": {"prompt_tokens": 42,
                                              "completion_tokens": len(tokens)}}
            self._chunk(writer, f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.completed += 1
            return True
        finally:
            hangup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hangup

    async def _hung_up(self, hangup: asyncio.Future[bytes], delay: float) -> bool:
        done, _ = await asyncio.wait({hangup}, timeout=delay)
        if done:
            self.disconnects += 1
            return True
        return False

    @staticmethod
    def _chunk(writer: asyncio.StreamWriter, text: str) -> None:
        data = text.encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
