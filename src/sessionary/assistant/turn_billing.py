"""The billing steps of a turn, the same under every face that answers turns.

Responses and Samsar turns (service.py, streaming.py) and chat completions (chat_completions.py,
chat_streaming.py) differ in what they read, fit and store, but not in how a turn is paid for:
the hold's prompt is sized with the same ceiling, a stream announces the same hold and balance,
and a stream cut short is billed the same way. A difference here between two faces would be a
way to get output from one of them for less, so each step exists once.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import anyio

from sessionary.billing.ledger import Settlement
from sessionary.billing.metering import Meter
from sessionary.kit.db import Database
from sessionary.kit.loop_units import from_worker
from sessionary.providers.base import ChatMessage, ChatModel, Usage
from sessionary.providers.container import is_local


@dataclass
class TurnAnswer:
    """A finished turn: its payload in the face's shape, and what it cost."""

    payload: dict[str, Any]
    settlement: Settlement


@dataclass
class TurnStream:
    """A turn being streamed: the events, and the hold the answer's headers announce.

    The charge is known only at the end: the final event carries `credits`.
    """

    events: AsyncIterator[bytes]
    reserved_micro: int
    remaining_micro: int
    write_timeout_seconds: float


def counts_at_once(chat: ChatModel) -> bool:
    """Whether `token_counter(chat)` answers without waiting on the model (whose own worker may
    be busy generating another turn for seconds)."""
    return getattr(chat, "count_tokens_now", None) is not None


def token_counter(chat: ChatModel) -> Callable[[Sequence[ChatMessage]], int]:
    """How a turn's tokens are counted from a worker thread (where a turn is planned, fitted
    and reserved in one hand-off): directly when the model counts without waiting (a remote
    model's estimate), else through the event loop (a unit running on the loop leaves it
    for a worker first: `kit/loop_units.from_worker`)."""
    counted_now = getattr(chat, "count_tokens_now", None)
    if counted_now is not None:
        return cast(Callable[[Sequence[ChatMessage]], int], counted_now)
    return lambda messages: from_worker(chat.count_tokens, messages)  # never from the loop


def worst_input_tokens(
    chat: ChatModel, counted: int, messages: Sequence[ChatMessage], extra_text: str = ""
) -> int:
    """The prompt's tokens as a ceiling for the hold: exact for the local model (its own
    tokenizer); for a remote one, whose tokenizer is not here, the UTF-8 bytes (a byte-level
    token covers at least one byte), so a prompt in any script cannot cost more than its hold.
    `extra_text` is what the model reads besides the messages (the function definitions)."""
    if is_local(chat):
        return counted
    ceiling = len(extra_text.encode("utf-8"))
    for message in messages:
        ceiling += len(message.text.encode("utf-8")) + 8
        for call in message.calls:
            ceiling += len(call.arguments.encode("utf-8")) + len(call.name.encode("utf-8")) + 16
    return max(counted, ceiling)


async def stream_with_hold(
    database: Database, meter: Meter, events: AsyncIterator[bytes]
) -> TurnStream:
    """The stream and the headers' figures: the hold, and the balance once it was taken. The
    hold goes back if the balance cannot be read (the events never start)."""
    try:
        remaining = await meter.remaining()
    except BaseException:
        await meter.release()
        raise
    return TurnStream(
        events,
        reserved_micro=meter.reservation.amount_micro,
        remaining_micro=remaining,
        write_timeout_seconds=database.settings.stream_write_timeout_seconds,
    )


def produced_tokens(chat: ChatModel, produced: list[str]) -> int:
    """Output tokens of an interrupted stream: the local model streams one token a delta; a
    remote one may pack several in a delta, so count at least a token per four characters."""
    if is_local(chat):
        return len(produced)
    return max(len(produced), math.ceil(sum(len(p) for p in produced) / 4))


async def settle_partial(
    meter: Meter,
    chat: ChatModel,
    *,
    started: bool,
    produced: list[str],
    input_tokens: int,
    price: Callable[[Usage], int],
    model: str,
    subject_id: str,
) -> Settlement | None:
    """Bill an interrupted turn (the model failed, or the client left): its prompt and the deltas
    produced once the model was called, never more than the hold (the agreed worst case); release
    the hold when the model was never called. None when nothing was charged here."""
    settlement: Settlement | None = None
    with anyio.CancelScope(shield=True):
        if meter.settlement is not None:  # settled already (the hang-up came during commit)
            return None
        if not started:
            await meter.release()
            return None
        usage = Usage(input_tokens, produced_tokens(chat, produced))
        charge = min(price(usage), meter.reservation.amount_micro)
        settlement = await meter.settle(
            charge, model=model, usage={"cancelled": True}, subject_id=subject_id
        )
    return settlement
