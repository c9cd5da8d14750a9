"""The customer's profile from Feast's online store, as a tool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ragpacer.agents.tools import ToolArgumentError


class CustomerProfile:
    name: ClassVar[str] = "customer_profile"
    description: ClassVar[str] = "The customer's tier, tenure, lifetime value and open tickets."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"customer_id": {"type": "string", "maxLength": 128}},
        "required": ["customer_id"],
        "additionalProperties": False,
    }

    def __init__(self, features: Any, timeout_s: float = 0.05) -> None:
        self.features = features  # pipeline.features.FeaturesStage (its store, its names)
        self.timeout_s = timeout_s

    async def __call__(self, args: dict[str, Any]) -> dict[str, Any]:
        stage = self.features
        if stage.store is None:
            raise RuntimeError("feature store not started")
        rows = [{"customer_id": args["customer_id"]}]
        if stage.settings.features.online_store == "redis":
            resp = await stage.store.get_online_features_async(features=stage.refs,
                                                               entity_rows=rows)
        else:
            resp = stage.store.get_online_features(features=stage.refs, entity_rows=rows)
        data = resp.to_dict()
        profile = {n: data.get(n, [None])[0] for n in stage.settings.features.names}
        if all(v is None for v in profile.values()):
            return {"known": False}
        return {"known": True, **profile}

    def arguments_from(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if not state.get("user_id"):
            raise ToolArgumentError("customer_profile needs the customer id (`user`)")
        return {"customer_id": state["user_id"]}
