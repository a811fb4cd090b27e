"""Which system prompt and which model a turn uses."""

from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer clearly and concisely, and say so when you do not know."
)


def system_prompt_for(
    account_prompt: str | None, instructions: str | None = None, user_prompt: str | None = None
) -> str:
    """The request's instructions, else the external user's prompt, else the account's, else
    the default."""
    if instructions:
        return instructions
    return user_prompt or account_prompt or DEFAULT_SYSTEM_PROMPT
