"""Which system prompt and which model a turn uses."""

from __future__ import annotations

from sessionary.accounts.models import Account

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer clearly and concisely, and say so when you do not know."
)


def system_prompt_for(
    account: Account, instructions: str | None = None, user_prompt: str | None = None
) -> str:
    """The request's instructions, else the external user's prompt, else the account's, else
    the default."""
    if instructions:
        return instructions
    return user_prompt or account.system_prompt or DEFAULT_SYSTEM_PROMPT
