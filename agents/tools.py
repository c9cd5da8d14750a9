"""The tool protocol, argument validation and the registry.

A tool is one async call with JSON-schema arguments and its own timeout. The same schema is
what the LLM sees in OpenAI's tool format, and what arguments are checked against (whoever
produced them: a route, or a model's tool call).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import fastjsonschema

from ragpacer.pipeline.core.errors import ToolArgumentError


@runtime_checkable
class Tool(Protocol):
    """Optional beside these: ``describe(result) -> str``, the result in a sentence of facts
    the customer can check, for an answer made without the LLM (the extractive one, or the
    fallback when the LLM is down or slow). A tool without it informs only the LLM's answers."""

    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, Any]]  # JSON schema of the arguments (an object)
    timeout_s: float

    async def __call__(self, args: dict[str, Any]) -> Any: ...

    def arguments_from(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments when a route runs the tool directly (no model involved)."""
        ...


_VALIDATORS: dict[str, Callable[[Any], Any]] = {}


def validator(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    """The schema compiled to Python once (fastjsonschema), shared by every tool that
    declares it: microseconds per call, and every JSON-schema keyword enforced (pattern,
    lengths, items, anyOf, formats...): what the model is shown is what is checked."""
    key = json.dumps(schema, sort_keys=True)
    compiled = _VALIDATORS.get(key)
    if compiled is None:
        compiled = _VALIDATORS[key] = fastjsonschema.compile(dict(schema))
    return compiled


def validate_arguments(schema: Mapping[str, Any], args: Any, where: str = "arguments") -> None:
    """Raises ToolArgumentError saying what is wrong, in words the model can act on."""
    try:
        validator(schema)(args)
    except fastjsonschema.JsonSchemaValueException as exc:
        message = exc.message.replace("data", where, 1) if exc.message.startswith("data") \
            else f"{where}: {exc.message}"
        raise ToolArgumentError(message) from None


def openai_tool(tool: Tool) -> dict[str, Any]:
    return {"type": "function", "function": {"name": tool.name, "description": tool.description,
                                             "parameters": tool.parameters}}


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is registered twice")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = sorted(self._tools)
            raise ToolArgumentError(f"unknown tool {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._tools)
