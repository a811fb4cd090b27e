"""The tools a turn offers, validated before anything is charged.

Two kinds run here: client-side `function` tools (the model answers with `function_call` items the
client runs) and `image_generation` (the configured images provider). Every other hosted tool
(web_search, file_search, code_interpreter, computer use, MCP, shell...) needs machinery this
server does not have, so offering one is a 400 naming it: a tool is never dropped in silence, since
a client that offers `web_search` and gets an answer would believe the web was searched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sessionary.assistant.schemas import TurnRequest
from sessionary.kit.errors import InvalidRequest, invalid_shape
from sessionary.kit.json_schema import check_schema
from sessionary.providers.base import FunctionTool, ToolChoice

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_SCHEMA_CHARS = 100_000


class FunctionDefinition(BaseModel):
    """A function tool as OpenAI's Responses API defines it (no other keys)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True)
class ToolPlan:
    """What the request's tools mean for this turn.

    `echo` is the tools as the response shows them; `choice_echo` the tool_choice likewise.
    `image_forced` makes the turn an image turn; `image_offered` lets a Responses-capable
    upstream decide. `max_calls` caps the function calls kept from one answer.
    """

    functions: tuple[FunctionTool, ...] = ()
    choice: ToolChoice = field(default_factory=ToolChoice)
    image_tool: dict[str, Any] | None = None
    image_forced: bool = False
    echo: tuple[dict[str, Any], ...] = ()
    choice_echo: str | dict[str, Any] = "auto"
    max_calls: int | None = None

    @property
    def image_offered(self) -> tuple[dict[str, Any], ...]:
        if self.image_tool is None or self.image_forced or self.choice.mode == "none":
            return ()
        return (self.image_tool,)

    def definitions_text(self) -> str:
        """The function definitions as the model reads them: what they cost as input tokens."""
        if not self.functions or self.choice.mode == "none":
            return ""
        return json.dumps([_echo_function(f) for f in self.functions], ensure_ascii=False)


def _unsupported(kind: Any, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"The tool type '{kind}' is not supported by this server: it cannot run it. "
        "Offer 'function' tools (your code runs them) or 'image_generation'.",
        param=param,
        code="unsupported_tool",
    )


def _function(raw: dict[str, Any], param: str, scope: str) -> FunctionTool:
    name = raw.get("name")
    label = f"function '{name}'" if isinstance(name, str) else "a function tool"
    try:
        definition = FunctionDefinition.model_validate(raw)
    except ValidationError as exc:
        raise invalid_shape(exc, label, param) from None
    schema = definition.parameters or {"type": "object", "properties": {}}
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise InvalidRequest(
            f"The parameters of {label} exceed {MAX_SCHEMA_CHARS} characters.",
            param=f"{param}.parameters",
        )
    if schema.get("type") != "object":
        raise InvalidRequest(
            f"The parameters of {label} must be a JSON Schema of type 'object'.",
            param=f"{param}.parameters",
        )
    check_schema(schema, f"{param}.parameters", scope=scope)
    return FunctionTool(definition.name, schema, definition.description, definition.strict)


def _echo_function(tool: FunctionTool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": tool.strict,
    }


def _named(raw: Any, param: str, functions: dict[str, FunctionTool], image: bool) -> str:
    """A tool named by tool_choice (or allowed_tools): it must be one the request offers."""
    if not isinstance(raw, dict):
        raise InvalidRequest("A chosen tool must be an object.", param=param)
    kind = raw.get("type")
    if kind == "image_generation":
        if not image:
            raise InvalidRequest(
                "tool_choice names image_generation, which 'tools' does not offer.", param=param
            )
        return "image_generation"
    if kind != "function":
        raise _unsupported(kind, param)
    name = raw.get("name")
    if not isinstance(name, str) or name not in functions:
        raise InvalidRequest(
            f"tool_choice names the function '{name}', which 'tools' does not offer.",
            param=param,
            code="tool_not_offered",
        )
    return name


def plan_tools(request: TurnRequest, scope: str) -> ToolPlan:
    """Validate `tools`, `tool_choice`, `parallel_tool_calls` and `max_tool_calls` (400 before
    any charge) and say what the turn offers the model. `scope`: the caller's account (whose
    checked schemas are remembered, `kit/json_schema.py`)."""
    functions: dict[str, FunctionTool] = {}
    image_tool: dict[str, Any] | None = None
    echo: list[dict[str, Any]] = []
    for index, raw in enumerate(request.tools or []):
        param = f"tools[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise InvalidRequest("Each tool must be an object with a 'type'.", param=param)
        kind = raw["type"]
        if kind == "function":
            tool = _function(raw, param, scope)
            if tool.name in functions:
                raise InvalidRequest(f"Two tools are named '{tool.name}'.", param=f"{param}.name")
            functions[tool.name] = tool
            echo.append(_echo_function(tool))
        elif kind == "image_generation":
            if image_tool is not None:
                raise InvalidRequest("Offer image_generation once.", param=param)
            image_tool = raw
            echo.append(raw)
        else:
            raise _unsupported(kind, f"{param}.type")
    choice, choice_echo, image_forced = _choice(request.tool_choice, functions, image_tool)
    max_calls = request.max_tool_calls
    if request.parallel_tool_calls is False:
        max_calls = 1
    return ToolPlan(
        functions=tuple(functions.values()),
        choice=choice,
        image_tool=image_tool,
        image_forced=image_forced,
        echo=tuple(echo),
        choice_echo=choice_echo,
        max_calls=max_calls,
    )


def _choice(
    raw: Any, functions: dict[str, FunctionTool], image_tool: dict[str, Any] | None
) -> tuple[ToolChoice, str | dict[str, Any], bool]:
    """The tool_choice as the model's constraint, as echoed, and whether it forces an image."""
    image = image_tool is not None
    if raw is None or raw == "auto":
        return ToolChoice("auto"), "auto", False
    if raw == "none":
        return ToolChoice("none"), "none", False
    if raw == "required":
        if not functions and not image:
            raise InvalidRequest(
                "tool_choice 'required' needs at least one tool in 'tools'.", param="tool_choice"
            )
        # With no function offered, "required" means the image tool (as Samsar's clients use it).
        return ToolChoice("required"), "required", not functions
    if not isinstance(raw, dict):
        raise InvalidRequest(
            "tool_choice is 'auto', 'none', 'required', a tool object or allowed_tools.",
            param="tool_choice",
        )
    if raw.get("type") == "allowed_tools":
        mode = raw.get("mode", "auto")
        chosen = raw.get("tools")
        if mode not in ("auto", "required") or not isinstance(chosen, list) or not chosen:
            raise InvalidRequest(
                "allowed_tools needs 'mode' ('auto' or 'required') and a non-empty 'tools' list.",
                param="tool_choice",
            )
        names = [
            _named(t, f"tool_choice.tools[{i}]", functions, image) for i, t in enumerate(chosen)
        ]
        allowed = tuple(n for n in names if n != "image_generation")
        only_image = not allowed
        echo = {
            "type": "allowed_tools",
            "mode": mode,
            "tools": [
                {"type": "image_generation"}
                if n == "image_generation"
                else {"type": "function", "name": n}
                for n in names
            ],
        }
        return ToolChoice(mode, allowed), echo, only_image and mode == "required"
    name = _named(raw, "tool_choice", functions, image)
    if name == "image_generation":
        return ToolChoice("none"), {"type": "image_generation"}, True
    return ToolChoice("required", (name,)), {"type": "function", "name": name}, False
