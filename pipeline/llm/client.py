"""Async client for any OpenAI-compatible chat server, cut by the deadline.

One pooled ``httpx.AsyncClient`` per process. Every call streams, so that at the deadline the
client can close the connection (the server then aborts the request) and still return what was
generated, marked truncated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ragpacer.pipeline.core.context import AnswerOptions
from ragpacer.pipeline.core.deadline import Deadline
from ragpacer.pipeline.core.errors import (
    LLMBusy,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    LLMUnreachable,
)
from ragpacer.pipeline.core.settings import ModelSettings
from ragpacer.pipeline.llm.replicas import Replica, ReplicaSet

log = logging.getLogger("ragpacer.llm")

# Stop reading at least this long before the cut-off, so the runner's hard timeout never
# races us; on a busy loop the client aims earlier by how late its cuts have been landing.
CUT_MARGIN_S = 0.002
MAX_CUT_LAG_S = 0.25
MIN_TOKENS = 8
# When the learned TTFT has kept every call away this long, one call goes with the configured
# first guess instead: an idle engine's first token is fast again, and only a call can tell.
PROBE_AFTER_S = 2.0
# Prompts shorter than this say little about prefill speed (the first token's wait is mostly
# queueing and one decode step).
PREFILL_SAMPLE_TOKENS = 64
# How often an ejected replica's model list is polled (and how long each poll may take).
HEALTH_POLL_S = 1.0


def _auth(model: ModelSettings) -> dict[str, str]:
    """The model's bearer key as a header, if it has one."""
    key = model.api_key
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}


@dataclass(slots=True)
class Completion:
    model: str
    text: str
    finish_reason: str | None
    truncated: bool
    ttft_ms: float | None
    elapsed_ms: float
    completion_tokens: int
    prompt_tokens: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    replica: str = ""  # the base URL that answered
    failed_over: list[str] = field(default_factory=list)  # replicas that failed before it

    @property
    def tokens_per_s(self) -> float | None:
        if self.ttft_ms is None or self.completion_tokens < 2:
            return None
        decode_s = (self.elapsed_ms - self.ttft_ms) / 1000.0
        return (self.completion_tokens - 1) / decode_s if decode_s > 0 else None


class _Rates:
    """Measured TTFT and decode speed per model (EWMA), seeded from the config."""

    def __init__(self, model: ModelSettings) -> None:
        self.first_guess_ms = model.ttft_ms
        self.ttft_ms = model.ttft_ms
        self.tokens_per_s = model.decode_tokens_per_s
        # Prompt tokens read per second of the wait for the first token: a lower bound on the
        # engine's prefill speed (the wait includes queueing), which is the safe side.
        self.prefill_tokens_per_s = model.prefill_tokens_per_s
        self.last_call = time.monotonic()

    def update(self, c: Completion, alpha: float = 0.2) -> None:
        if c.ttft_ms is not None:
            self.ttft_ms += alpha * (c.ttft_ms - self.ttft_ms)
            if c.prompt_tokens >= PREFILL_SAMPLE_TOKENS and c.ttft_ms > 0:
                seen = c.prompt_tokens / (c.ttft_ms / 1000.0)
                self.prefill_tokens_per_s += alpha * (seen - self.prefill_tokens_per_s)
        if c.completion_tokens < 16:
            return  # a handful of tokens says little about sustained speed
        tps = c.tokens_per_s
        if tps is not None:
            self.tokens_per_s += alpha * (tps - self.tokens_per_s)

    def no_first_token(self, waited_ms: float, alpha: float = 0.2) -> None:
        """Cut before any token: the TTFT was at least ``waited_ms``. A saturated engine shows
        itself only this way; without it the estimate stays low and every call is tried, cut
        late, and answered extractively anyway."""
        if waited_ms > self.ttft_ms:
            self.ttft_ms += alpha * (waited_ms - self.ttft_ms)

    def expected_ttft_ms(self) -> float:
        if time.monotonic() - self.last_call > PROBE_AFTER_S:
            return min(self.ttft_ms, self.first_guess_ms)
        return self.ttft_ms


class LLMClient:
    def __init__(self, *, max_connections: int = 64) -> None:
        self._http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
            timeout=httpx.Timeout(30.0, connect=1.0),
        )
        self._rates: dict[str, _Rates] = {}
        self._replicas: dict[str, ReplicaSet] = {}
        # How long after the cut fires the call actually returns: the event loop's lag plus
        # closing the stream. Measured under load on 2 shared cores: 25-60 ms, enough to miss
        # the runner's grace and lose the partial answer. Rises fast, decays slowly.
        self.cut_lag_s = CUT_MARGIN_S

    async def aclose(self) -> None:
        for found in self._replicas.values():
            for replica in found.replicas:
                if replica.watch is not None:
                    replica.watch.cancel()
        await self._http.aclose()

    def rates(self, model: ModelSettings) -> _Rates:
        r = self._rates.get(model.name)
        if r is None:
            r = self._rates[model.name] = _Rates(model)
        return r

    def replicas(self, model: ModelSettings) -> ReplicaSet:
        found = self._replicas.get(model.name)
        if found is None:
            found = self._replicas[model.name] = ReplicaSet(model.endpoints,
                                                            model.max_in_flight)
        return found

    def refusals(self) -> dict[str, int]:
        """Per model: calls turned away at once because every replica held its
        ``max_in_flight``."""
        return {name: found.refused for name, found in self._replicas.items()}

    def prompt_tokens_for(self, model: ModelSettings, deadline: Deadline, share: float) -> int:
        """How many prompt tokens the engine reads for this call in ``share`` of the time left,
        at the measured prefill speed shared with the calls already in flight on it (a busy
        engine prefills them too: each new prompt waits for theirs)."""
        left_s = max(deadline.remaining_ms(), 0.0) / 1000.0
        readable = self.rates(model).prefill_tokens_per_s * share * left_s
        return math.floor(readable / (1.0 + self.replicas(model).load()))

    def max_tokens_for(self, model: ModelSettings, deadline: Deadline) -> int:
        """How many tokens fit in the time left at the measured speed."""
        r = self.rates(model)
        left_s = (deadline.remaining_ms() - r.expected_ttft_ms()) / 1000.0
        return min(model.max_tokens, max(0, math.floor(left_s * r.tokens_per_s)))

    async def complete(
        self,
        model: ModelSettings,
        messages: list[dict[str, Any]],
        *,
        deadline: Deadline,
        on_token: Callable[[str], None] | None = None,
        extra: dict[str, Any] | None = None,
        options: AnswerOptions | None = None,
        traceparent: str | None = None,
    ) -> Completion:
        """``traceparent``: sent to the engine, so its spans (vLLM's OpenTelemetry) join the
        request's trace under the request's root span."""
        max_tokens = self.max_tokens_for(model, deadline)
        if max_tokens < MIN_TOKENS:
            raise LLMTimeout(
                f"{deadline.remaining_ms():.0f} ms left: not enough for {MIN_TOKENS} tokens "
                f"from {model.name}"
            )
        if options is not None and options.max_tokens is not None:
            max_tokens = min(max_tokens, options.max_tokens)  # the caller's, when smaller
        body: dict[str, Any] = {
            "model": model.name,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": model.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            **model.extra_body,
            **(options.sampling() if options is not None else {}),
            **(extra or {}),
        }
        headers = _auth(model) | ({"traceparent": traceparent} if traceparent else {})
        replicas = self.replicas(model)
        tried: list[Replica] = []
        while True:
            replica = replicas.pick(tried)
            if replica is None and replicas.full():
                replicas.refused += 1
                raise LLMBusy(f"{model.name}: every replica has {model.max_in_flight} calls in "
                              "flight")
            if replica is None:
                raise LLMUnavailable(f"{model.name}: every replica is ejected; the next probe "
                                     f"in {replicas.retry_in_s():.1f} s")
            tried.append(replica)
            try:
                completion = await self._call(model, replica, body, headers, deadline, on_token)
            except LLMUnavailable:
                # Another replica, while one is left and the time left buys a useful answer.
                if (len(tried) == len(replicas.replicas) or not replicas.any_available(tried)
                        or self.max_tokens_for(model, deadline) < MIN_TOKENS):
                    raise
                continue
            completion.failed_over = [r.url for r in tried[:-1]]
            return completion

    async def _call(self, model: ModelSettings, replica: Replica, body: dict[str, Any],
                    headers: dict[str, str], deadline: Deadline,
                    on_token: Callable[[str], None] | None) -> Completion:
        """One streamed call to one replica; its breaker learns whether the replica is up."""
        replica.in_flight += 1
        replica.calls += 1
        answered = False
        try:
            completion = await self._timed_stream(model, replica.url, body, headers, deadline,
                                                  on_token)
            answered = True
            return completion
        except LLMUnavailable as exc:
            replica.failures += 1
            replica.breaker.failure()
            self._watch(model, replica, down=isinstance(exc, LLMUnreachable))
            raise
        finally:
            replica.in_flight -= 1
            if answered:
                replica.breaker.success()
            else:  # cut, refused or cancelled: no verdict; a pending probe is handed on
                replica.breaker.release()

    def _watch(self, model: ModelSettings, replica: Replica, down: bool) -> None:
        """Poll an ejected replica until it is back (with one replica there is nothing to
        readmit it among: every call goes to it anyway). ``down``: it could not be reached."""
        if len(model.endpoints) > 1 and (replica.watch is None or replica.watch.done()):
            replica.watch = asyncio.create_task(self._readmit_when_back(model, replica, down))

    async def _readmit_when_back(self, model: ModelSettings, replica: Replica,
                                 seen_down: bool) -> None:
        """Readmit an ejected replica as soon as its model list answers after it could not be
        reached: a restarted engine takes calls when it is up, not up to MAX_EJECT_S later.
        One that lists its models but fails calls (5xx) is left to its breaker's backoff."""
        headers = _auth(model)
        while not replica.breaker.closed:
            await asyncio.sleep(HEALTH_POLL_S)
            try:
                response = await self._http.get(f"{replica.url.rstrip('/')}/models",
                                                headers=headers, timeout=HEALTH_POLL_S)
                up = response.status_code == 200
            except httpx.HTTPError:
                up = False
            if up and seen_down and not replica.breaker.closed:
                replica.breaker.success()
                replica.readmitted += 1
                log.info("%s: replica %s answers again; readmitted", model.name, replica.url)
                return
            seen_down = seen_down or not up

    async def _timed_stream(self, model: ModelSettings, url: str, body: dict[str, Any],
                            headers: dict[str, str], deadline: Deadline,
                            on_token: Callable[[str], None] | None) -> Completion:
        remaining_s = max(deadline.remaining_ms() / 1000.0, 0.001)
        timeout = httpx.Timeout(remaining_s, connect=min(remaining_s, 1.0))
        completion = Completion(model.name, "", None, False, None, 0.0, 0, replica=url)
        rates = self.rates(model)
        t0 = rates.last_call = time.monotonic()
        cut_at = deadline.at - self.cut_lag_s
        try:
            async with asyncio.timeout_at(cut_at):
                await self._stream(model, url, body, headers, timeout, completion, t0, on_token)
        except TimeoutError:
            self._learn_cut_lag(time.monotonic() - cut_at)
            # The `async with client.stream` block has exited: the connection is closed and
            # the server aborts the request.
            if completion.ttft_ms is None:
                rates.no_first_token((time.monotonic() - t0) * 1000.0)
                raise LLMTimeout(f"{model.name}: no token before the deadline") from None
            completion.truncated = True
            completion.finish_reason = "deadline"
        completion.elapsed_ms = (time.monotonic() - t0) * 1000.0
        rates.update(completion)
        return completion

    def _learn_cut_lag(self, late_s: float) -> None:
        alpha = 0.5 if late_s > self.cut_lag_s else 0.05
        lag = self.cut_lag_s + alpha * (late_s - self.cut_lag_s)
        self.cut_lag_s = min(MAX_CUT_LAG_S, max(CUT_MARGIN_S, lag))

    async def _stream(
        self,
        model: ModelSettings,
        base_url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        timeout: httpx.Timeout,  # noqa: ASYNC109 - httpx's own per-phase timeout
        c: Completion,
        t0: float,
        on_token: Callable[[str], None] | None,
    ) -> None:
        url = base_url.rstrip("/") + "/chat/completions"
        parts: list[str] = []
        try:
            async with self._http.stream(
                "POST", url, json=body, headers=headers, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    detail = (await resp.aread())[:300].decode("utf-8", "replace")
                    cls = LLMUnavailable if resp.status_code >= 500 else LLMError
                    raise cls(f"{model.name} at {url}: HTTP {resp.status_code}: {detail}")
                try:
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        self._take_chunk(json.loads(data), c, parts, t0, on_token)
                finally:
                    c.text = "".join(parts)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            raise LLMUnreachable(f"{model.name} at {url}: {type(exc).__name__}: {exc}") from exc
        except httpx.ReadTimeout as exc:
            raise TimeoutError from exc
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise LLMError(f"{model.name} at {url}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _take_chunk(
        chunk: dict[str, Any],
        c: Completion,
        parts: list[str],
        t0: float,
        on_token: Callable[[str], None] | None,
    ) -> None:
        usage = chunk.get("usage")
        if usage:
            c.prompt_tokens = usage.get("prompt_tokens", 0)
            c.completion_tokens = usage.get("completion_tokens", c.completion_tokens)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if c.ttft_ms is None:
                    c.ttft_ms = (time.monotonic() - t0) * 1000.0
                parts.append(text)
                c.completion_tokens += 1
                if on_token is not None:
                    on_token(text)
            if delta.get("tool_calls"):
                c.tool_calls.extend(delta["tool_calls"])
            if choice.get("finish_reason"):
                c.finish_reason = choice["finish_reason"]
