"""What every chat provider needs to know about a request's function tools, decided once.

`tool_choice` narrows the offered functions (`allowed`) and says whether the answer must be a
call; both providers read it through `callable_functions` so a choice that names a function the
request does not offer is the same 400 everywhere, before any model runs.
"""

from __future__ import annotations

from sessionary.kit.errors import InvalidRequest
from sessionary.kit.ids import new_id
from sessionary.providers.base import ChatRequest, FunctionTool


def callable_functions(request: ChatRequest) -> tuple[FunctionTool, ...]:
    """The functions the model may call under the request's tool_choice (none for "none").

    Raises a 400 naming `tool_choice` when it names a function that is not offered, or requires
    a call while no function is offered.
    """
    choice = request.tool_choice
    if choice.mode == "none":
        return ()
    functions = request.functions
    if choice.allowed is not None:
        offered = {f.name for f in functions}
        unknown = [name for name in choice.allowed if name not in offered]
        if unknown:
            raise InvalidRequest(
                f"tool_choice names a function that is not among the tools: '{unknown[0]}'.",
                param="tool_choice",
            )
        functions = tuple(f for f in functions if f.name in choice.allowed)
    if choice.mode == "required" and not functions:
        raise InvalidRequest(
            "tool_choice requires a function call, but no function tool is offered.",
            param="tool_choice",
        )
    return functions


def must_call(request: ChatRequest) -> bool:
    return request.tool_choice.mode == "required"


def new_call_id() -> str:
    """An id for a call the model made, when the model (or its server) gave none."""
    return new_id("call")
