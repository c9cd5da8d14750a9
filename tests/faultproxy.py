"""A TCP proxy on loopback that injects real network faults between ragpacer and a dependency.

Every byte still travels over real sockets to the real server behind it (Redis, vLLM, an
HTTP tool, an OTLP collector); the proxy only delays replies, cuts connections after a number
of bytes, hangs (accepts and forwards nothing), or closes its port and opens it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass


@dataclass
class Faults:
    delay_s: float = 0.0  # added before each chunk the server sends back
    cut_after_bytes: int | None = None  # close both sides after this many reply bytes
    hang: bool = False  # accept, read, never answer


class FaultProxy:
    """``with FaultProxy(port) as proxy:`` then point the client at ``proxy.port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.faults = Faults()
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
        self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    # -- fault controls, called from the test's thread ------------------------------------

    def set(self, **faults: object) -> None:
        self.faults = Faults(**faults)  # type: ignore[arg-type]

    def clear(self) -> None:
        self.faults = Faults()

    def down(self) -> None:
        """Close the port and every open connection: the dependency is gone."""
        self._call(self._close())

    def up(self) -> None:
        """Listen again (on the same port after the first time)."""
        self._call(self._open())

    # -- the proxy itself -----------------------------------------------------------------

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.faults.hang:
                with contextlib.suppress(asyncio.CancelledError):
                    await reader.read()  # until the client gives up
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(self._pipe(reader, up_writer, reply=False),
                                 self._pipe(up_reader, writer, reply=True),
                                 return_exceptions=True)
        for w in (writer, up_writer):
            w.transport.abort()
            self._writers.discard(w)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    reply: bool) -> None:
        sent = 0
        try:
            while chunk := await src.read(65536):
                faults = self.faults
                if reply and faults.delay_s:
                    await asyncio.sleep(faults.delay_s)
                if reply and faults.cut_after_bytes is not None:
                    room = faults.cut_after_bytes - sent
                    if room <= len(chunk):
                        dst.write(chunk[:max(room, 0)])
                        await dst.drain()
                        break
                dst.write(chunk)
                await dst.drain()
                sent += len(chunk)
        finally:
            dst.transport.abort()
