"""A tool that calls a configured HTTP service (GET, JSON) with the pooled async client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from ragpacer.agents.tools import ToolArgumentError


class HttpServiceTool:
    name: ClassVar[str] = "account_service"
    description: ClassVar[str] = "The customer's account status from the core banking service."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"customer_id": {"type": "string", "maxLength": 128}},
        "required": ["customer_id"],
        "additionalProperties": False,
    }

    def __init__(self, url: str, timeout_s: float = 0.2,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.client = client or httpx.AsyncClient(timeout=timeout_s)

    async def __call__(self, args: dict[str, Any]) -> Any:
        r = await self.client.get(self.url, params={"customer_id": args["customer_id"]})
        r.raise_for_status()
        return r.json()

    def arguments_from(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if not state.get("user_id"):
            raise ToolArgumentError("account_service needs the customer id (`user`)")
        return {"customer_id": state["user_id"]}
