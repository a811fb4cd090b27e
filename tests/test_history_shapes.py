"""A turn's history on its way to the model: the short paths for plain messages (most of a
history) give what the general path gives, message for message."""

from __future__ import annotations

import math
from typing import Any

from sessionary.assistant.inputs import to_chat, to_chat_messages, tool_item
from sessionary.conversations.service import NewMessage
from sessionary.providers.base import ChatMessage, FunctionCall, ImagePart
from sessionary.providers.llm import openai_tools
from sessionary.providers.llm.openai import OpenAIChat, _estimate_tokens

CALL = {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"q": "é"}'}
OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": "found"}

STORED = [
    NewMessage("user", [], "Hello, Grünerløkka 😀"),
    NewMessage("assistant", [], ""),
    NewMessage("developer", [], "Be brief."),
    NewMessage("tool", [OUTPUT], "found"),  # role "tool", as stored
    NewMessage("assistant", [], "Let me look."),
    NewMessage("assistant", [CALL], ""),
    NewMessage("tool", [OUTPUT], "found"),
    NewMessage("critic", [], "an unknown role reads as the user's"),
    NewMessage("user", [{"type": "input_text", "text": "with parts"}], "with parts"),
]

PROMPT = [
    ChatMessage("system", "You help."),
    ChatMessage("user", "Hi 😀"),
    ChatMessage("assistant", ""),
    ChatMessage("assistant", "Calling.", calls=(FunctionCall("c1", "lookup", '{"q": 1}'),)),
    ChatMessage(
        "assistant", "", calls=(FunctionCall("c2", "f", "{}"), FunctionCall("c3", "g", ""))
    ),
    ChatMessage("tool", "42", call_id="c2"),
    ChatMessage("user", "Look.", images=(ImagePart("data:image/png;base64,AAAA"),)),
    ChatMessage("developer", "x" * 1001),
]


def _general_chat(messages: list[NewMessage]) -> list[ChatMessage]:
    """`to_chat_messages` as it was, every message through `tool_item` and `to_chat`."""
    chat: list[ChatMessage] = []
    for message in messages:
        item = tool_item(message)
        if item is None:
            chat.append(to_chat(message, with_images=False))
        elif item["type"] == "function_call":
            call = FunctionCall(item["call_id"], item["name"], item["arguments"])
            if chat and chat[-1].role == "assistant":
                last = chat[-1]
                chat[-1] = ChatMessage(last.role, last.text, last.images, (*last.calls, call))
            else:
                chat.append(ChatMessage("assistant", "", calls=(call,)))
        else:
            chat.append(ChatMessage("tool", message.text, call_id=item["call_id"]))
    return chat


def _general_input(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    shaped: list[dict[str, Any]] = []
    for m in messages:
        kind = "output_text" if m.role == "assistant" else "input_text"
        parts: list[dict[str, Any]] = [{"type": kind, "text": m.text}]
        parts += [{"type": "input_image", "image_url": i.url} for i in m.images]
        shaped += openai_tools.responses_items(m, parts)
    return shaped


def test_a_stored_history_reads_as_the_general_path_reads_it() -> None:
    assert to_chat_messages(STORED, with_images=False) == _general_chat(STORED)


def test_the_responses_input_and_the_estimate_are_the_general_ones() -> None:
    chat = OpenAIChat.__new__(OpenAIChat)
    assert chat._responses_input(PROMPT) == _general_input(PROMPT)
    estimate = sum(
        math.ceil((len(m.text) + sum(len(c.name) + len(c.arguments) for c in m.calls)) / 4) + 4
        for m in PROMPT
    )
    assert _estimate_tokens(PROMPT) == estimate
    assert _estimate_tokens([]) == 0
