"""The tool protocol, argument validation and the registry.

A tool is one async call with JSON-schema arguments and its own timeout. The same schema is
what the LLM sees in OpenAI's tool format, and what arguments are checked against (whoever
produced them: a route, or a model's tool call).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from ragpacer.pipeline.core.errors import ToolArgumentError


@runtime_checkable
class Tool(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, Any]]  # JSON schema of the arguments (an object)
    timeout_s: float

    async def __call__(self, args: dict[str, Any]) -> Any: ...

    def arguments_from(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments when a route runs the tool directly (no model involved)."""
        ...


_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict,
    "array": list}


def validate_arguments(schema: Mapping[str, Any], args: Any, where: str = "arguments") -> None:
    """A small JSON-schema subset: type, properties, required, enum, bounds, no extras."""
    expected = schema.get("type")
    if expected is not None:
        py = _TYPES[expected]
        if not isinstance(args, py) or (expected in ("integer", "number")
                                        and isinstance(args, bool)):
            raise ToolArgumentError(f"{where} must be {expected}, got {type(args).__name__}")
    if "enum" in schema and args not in schema["enum"]:
        raise ToolArgumentError(f"{where} must be one of {schema['enum']}, got {args!r}")
    if isinstance(args, int | float) and not isinstance(args, bool):
        if "minimum" in schema and args < schema["minimum"]:
            raise ToolArgumentError(f"{where} must be >= {schema['minimum']}, got {args}")
        if "maximum" in schema and args > schema["maximum"]:
            raise ToolArgumentError(f"{where} must be <= {schema['maximum']}, got {args}")
    if isinstance(args, str) and len(args) > schema.get("maxLength", 10_000):
        raise ToolArgumentError(f"{where} is longer than {schema.get('maxLength', 10_000)}")
    if expected == "object":
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in args:
                raise ToolArgumentError(f"{where}: missing required field {key!r}")
        for key, value in args.items():
            if key not in props:
                if schema.get("additionalProperties", False) is False:
                    raise ToolArgumentError(f"{where}: unknown field {key!r}; "
                                            f"allowed: {sorted(props)}")
                continue
            validate_arguments(props[key], value, f"{where}.{key}")


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
