"""Builds the managed engines a config asks for (one, or ``llm.managed.replicas`` on
consecutive ports), starts them, and keeps each running under a supervisor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ragpacer.pipeline.core.errors import ConfigError
from ragpacer.pipeline.core.settings import Settings
from ragpacer.pipeline.llm.engine import ManagedEngine
from ragpacer.pipeline.llm.prepare import prepare
from ragpacer.pipeline.llm.supervisor import EngineSupervisor


def managed_engines(settings: Settings, say: Callable[[str], None] = print
                    ) -> list[ManagedEngine]:
    cfg = settings.llm.managed
    names = [m.name for m in settings.llm.models]
    if cfg.model not in names:
        raise ConfigError(f"managed engine serves unknown model {cfg.model!r}; models: {names}",
                          field="llm.managed.model")
    model = settings.llm.model(cfg.model)
    ports = [cfg.port + i for i in range(cfg.replicas)]
    expected = [f"http://{cfg.host}:{port}/v1" for port in ports]
    if [u.rstrip("/") for u in model.endpoints] != expected:
        where = "url" if cfg.replicas == 1 else "urls"
        raise ConfigError(
            f"model {model.name!r} has {where} {model.endpoints} but the managed engine "
            f"listens on {expected if cfg.replicas > 1 else expected[0]}",
            field="llm.models")
    prepared = prepare(settings.home, cfg.kind, say)
    return [ManagedEngine(cfg.model_copy(update={"port": port}), prepared, settings.home,
                          model.name) for port in ports]


def managed_engine(settings: Settings, say: Callable[[str], None] = print) -> ManagedEngine:
    """The one managed engine (the CLI's `ragpacer llm serve`, benchmarks)."""
    return managed_engines(settings.model_copy(update={"llm": settings.llm.model_copy(
        update={"managed": settings.llm.managed.model_copy(update={"replicas": 1})})}), say)[0]


class EngineFleet:
    """The engines ragpacer runs for a pipeline, each under its own supervisor (an engine
    already serving on its port is adopted: used, never restarted or stopped)."""

    def __init__(self, engines: list[ManagedEngine],
                 on_restart: Callable[[float], None] | None = None) -> None:
        self.engines = engines
        self.on_restart = on_restart
        self.supervisors: list[EngineSupervisor] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, say: Callable[[str], None]) -> None:
        for engine in self.engines:  # from the loop's thread: the parent-death signal follows it
            engine.start()
        waits = [asyncio.to_thread(e.wait_healthy, None, say) for e in self.engines]
        for engine, seconds in zip(self.engines, await asyncio.gather(*waits), strict=True):
            say(f"{engine.cfg.kind} healthy at {engine.base_url} after {seconds:.1f} s")
            if engine.adopted:
                continue
            cfg = engine.cfg
            sup = EngineSupervisor(engine, backoff_s=cfg.restart_backoff_s,
                                   max_attempts=cfg.restart_attempts, on_restart=self.on_restart)
            self.supervisors.append(sup)
            self._tasks.append(asyncio.create_task(
                sup.run(), name=f"ragpacer-engine-supervisor-{cfg.port}"))

    def status(self) -> str:
        """For readiness: "ok", or each engine that is not up and why."""
        down = [f"{s.engine.base_url} {s.status()}" for s in self.supervisors
                if s.state != "up"]
        return "; ".join(down) or "ok"

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(asyncio.to_thread(e.stop) for e in self.engines))
