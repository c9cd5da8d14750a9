"""Whether the Redis server the tests use is up, and a proxy that holds its replies."""

from __future__ import annotations

import asyncio

REDIS = "redis://127.0.0.1:6379/0"


def redis_up(url: str = REDIS) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


class ReplyGate:
    """A TCP proxy in front of the test Redis, on the test's event loop, that holds Redis's
    replies while closed: what a client does while its command is in flight can be observed
    without timing anything."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379) -> None:
        self.upstream = (host, port)
        self.open = asyncio.Event()
        self.open.set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        await asyncio.gather(self._pump(reader, up_writer, gated=False),
                             self._pump(up_reader, writer, gated=True))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    gated: bool) -> None:
        while data := await src.read(65536):
            if gated:
                await self.open.wait()
            dst.write(data)
            await dst.drain()
        dst.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
