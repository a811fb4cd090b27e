"""Chat completions: one stateless turn from the client's own messages, billed like any turn.

plan (read the caller's prompt or workflow, check every parameter: 400s before any hold) → fit
(count the prompt, refuse what the context window cannot hold) → reserve the worst case → call
the provider, or stream it (chat_streaming.py) → settle what was produced → store the
conversation on a new session only when `store: true` asked for it.

The client sends the whole conversation each time, so nothing is read from a session. When the
messages carry no system or developer message, the prompt an assistant turn would use goes first
(the external user's, else the account's, else the default). A ChatKit client secret runs its
workflow: its instructions go first, and it may not send system or developer messages, set a
temperature its workflow fixes, or store (its conversation lives on its own session).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.accounts.service import AccountService
from sessionary.assistant.chat_inputs import ChatInputs, parse_request, record_parts
from sessionary.assistant.chat_payloads import completion_object, finish_reason
from sessionary.assistant.chat_schemas import ChatCompletionRequest
from sessionary.assistant.chat_streaming import stream_chat
from sessionary.assistant.inputs import is_light
from sessionary.assistant.prompts import system_prompt_for
from sessionary.assistant.turn_billing import (
    TurnAnswer,
    TurnStream,
    counts_at_once,
    stream_with_hold,
    token_counter,
    worst_input_tokens,
)
from sessionary.billing.ledger import Owner, Reservation, Settlement
from sessionary.billing.metering import Meter
from sessionary.billing.pricing import Pricing
from sessionary.chatkit.service import ChatKitService
from sessionary.conversations.completions import CompletionService
from sessionary.conversations.service import NewMessage
from sessionary.external.service import ExternalUserService
from sessionary.kit.db import Database
from sessionary.kit.errors import InvalidRequest
from sessionary.kit.ids import new_id
from sessionary.kit.metadata import check_metadata
from sessionary.providers.base import ChatMessage, ChatRequest, FunctionCall, Usage
from sessionary.providers.container import Providers
from sessionary.settings.files import FileInputSettings

log = structlog.get_logger("sessionary.assistant")

ROUTE = "/v1/chat/completions"


@dataclass
class ChatTurn:
    """Everything decided before the provider is called."""

    caller: Principal
    body: ChatCompletionRequest
    inputs: ChatInputs
    model: str
    messages: list[ChatMessage]  # the prompt as the provider reads it (system prompt first)
    temperature: float | None
    completion_id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=lambda: int(time.time()))
    input_tokens: int = 0
    max_output_tokens: int = 0
    light: bool = False  # `inputs.is_light`: its plan and settle may run on the event loop

    @property
    def owner(self) -> Owner:
        return Owner.of(self.caller)

    @property
    def store(self) -> bool:
        return bool(self.body.store)


def _refuse_overrides(
    body: ChatCompletionRequest, messages: list[ChatMessage], workflow_temperature: float | None
) -> None:
    """A client secret runs its workflow as configured (as on the Responses route)."""
    overridden = None
    if any(m.role in ("system", "developer") for m in messages):
        overridden = "messages"
    elif workflow_temperature is not None and body.temperature is not None:
        overridden = "temperature"
    elif body.store:
        overridden = "store"
    if overridden is not None:
        raise InvalidRequest(
            f"A client secret runs its workflow's instructions and settings; '{overridden}' "
            "(a system/developer message, a temperature its workflow fixes, or store) may not "
            "be set with it.",
            param=overridden,
            code="client_secret_cannot_override",
        )


def plan_chat(
    db: Session,
    providers: Providers,
    caller: Principal,
    body: ChatCompletionRequest,
    files: FileInputSettings,
) -> ChatTurn:
    """The turn's prompt, model and parameters; every 400 before any charge."""
    inputs = parse_request(body, files, caller.account_id)
    chat = providers.chat()
    model = providers.resolve_chat_model(body.model)
    messages = inputs.messages
    workflow = ChatKitService(db).find(caller.session_scope) if caller.session_scope else None
    if caller.session_scope is not None:
        _refuse_overrides(body, messages, workflow.temperature if workflow else None)
    if any(m.images for m in messages) and not chat.supports_vision:
        raise InvalidRequest(
            f"The model '{chat.name}' reads text only; remove the image_url parts or configure "
            "a vision model (SESSIONARY_LLM__VISION=true on a vision-capable server).",
            param="messages",
            code="images_not_supported",
        )
    if not any(m.role in ("system", "developer") for m in messages):
        account_prompt = AccountService(db).system_prompt(caller.account_id)
        user = (
            ExternalUserService(db).find(caller.external_user_id)
            if caller.external_user_id
            else None
        )
        prompt = system_prompt_for(
            account_prompt,
            workflow.instructions if workflow else None,
            user.system_prompt if user else None,
        )
        messages = [ChatMessage("system", prompt), *messages]
    temperature = body.temperature
    if temperature is None and workflow is not None:
        temperature = workflow.temperature
    return ChatTurn(caller, body, inputs, model, messages, temperature)


class ChatCompletions:
    def __init__(self, database: Database, providers: Providers, pricing: Pricing) -> None:
        self.database = database
        self.providers = providers
        self.pricing = pricing

    async def complete(
        self, caller: Principal, body: ChatCompletionRequest
    ) -> TurnAnswer | TurnStream:
        """Plan, fit and reserve (errors here are plain JSON answers), then answer or stream."""

        count = token_counter(self.providers.chat())

        def plan_and_hold() -> tuple[ChatTurn, Reservation]:
            """One hand-off: the plan's reads, the fit, then the hold's own transaction."""
            with self.database.point_reads() as db:
                turn = plan_chat(db, self.providers, caller, body, self.database.settings.files)
            self.fit(turn, count)
            return turn, Meter.hold(self.database, turn.owner, self.worst_cost(turn), ROUTE)

        # The output schema too: checking it costs its size (0.5 s for 1,600 properties).
        light = is_light([body.messages, body.tools, body.response_format])
        at_once = counts_at_once(self.providers.chat())
        turn, reservation = await self.database.in_worker(
            plan_and_hold,
            waits_elsewhere=not at_once,
            loop_ok=light and at_once,  # a local model's count waits on the model
        )
        turn.light = light
        meter = Meter(self.database, reservation)  # kept alive from here (on the event loop)
        if not body.stream:
            return await self.run(turn, meter)
        return await stream_with_hold(self.database, meter, stream_chat(self, turn, meter))

    # Fitting and reserving

    def _tools_message(self, turn: ChatTurn) -> list[ChatMessage]:
        """The function definitions as text: they reach the prompt too, so they are counted."""
        if not turn.inputs.functions or turn.inputs.tool_choice.mode == "none":
            return []
        spec = [
            {"name": f.name, "description": f.description, "parameters": f.parameters}
            for f in turn.inputs.functions
        ]
        return [ChatMessage("system", json.dumps(spec))]

    def fit(self, turn: ChatTurn, count: Callable[[Sequence[ChatMessage]], int]) -> None:
        """Count the prompt and size the output; a conversation that does not fit is a 400
        (chat completions have no truncation: the client owns its history). In a worker
        thread, `count` being `turn_billing.token_counter`."""
        chat = self.providers.chat()
        default = self.database.settings.default_max_output_tokens
        wanted = turn.inputs.max_output_tokens or default
        tokens = count([*turn.messages, *self._tools_message(turn)])
        if tokens + min(wanted, 16) > chat.context_window:
            raise InvalidRequest(
                f"The messages ({tokens} tokens) do not fit the model's context window "
                f"({chat.context_window}); send a shorter conversation.",
                param="messages",
                code="context_length_exceeded",
            )
        turn.input_tokens = tokens
        turn.max_output_tokens = min(wanted, chat.context_window - tokens)

    def worst_input_tokens(self, turn: ChatTurn) -> int:
        messages = [*turn.messages, *self._tools_message(turn)]
        return worst_input_tokens(self.providers.chat(), turn.input_tokens, messages)

    def cost(self, turn: ChatTurn, usage: Usage) -> int:
        return self.pricing.assistant_turn(turn.model, usage.input_tokens, usage.output_tokens)

    def worst_cost(self, turn: ChatTurn) -> int:
        """What the hold covers: the longest answer the turn allows."""
        return self.cost(turn, Usage(self.worst_input_tokens(turn), turn.max_output_tokens))

    # Calling the provider

    def chat_request(self, turn: ChatTurn) -> ChatRequest:
        body, inputs = turn.body, turn.inputs
        return ChatRequest(
            turn.messages,
            max_output_tokens=turn.max_output_tokens,
            temperature=turn.temperature,
            top_p=body.top_p,
            json_schema=inputs.json_schema,
            functions=inputs.functions,
            tool_choice=inputs.tool_choice,
            parallel_tool_calls=body.parallel_tool_calls is not False,
            stop=inputs.stop,
            seed=body.seed,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            party=turn.owner.party,
        )

    async def run(self, turn: ChatTurn, meter: Meter) -> TurnAnswer:
        """The non-streamed turn; the hold is settled or released before returning."""
        try:
            result = await self.providers.chat().generate(self.chat_request(turn))
        except BaseException:
            await meter.release()
            raise
        calls = result.calls if turn.inputs.functions else ()
        reason = finish_reason(result.finish_reason, calls)
        payload, settlement = await self.commit(
            turn, meter, result.text, calls, reason, result.usage
        )
        return TurnAnswer(payload, settlement)

    # Recording

    async def commit(
        self,
        turn: ChatTurn,
        meter: Meter,
        text: str,
        calls: tuple[FunctionCall, ...],
        reason: str,
        usage: Usage,
    ) -> tuple[dict[str, Any], Settlement]:
        """Store when asked, then charge what was produced (never more than the hold), in one
        transaction; the charge never depends on the store (a store that fails rolls the
        transaction back, the charge commits alone, and the answer is delivered without its
        `session_id`: `Database.commit_apart`)."""
        charge = min(self.cost(turn, usage), meter.reservation.amount_micro)
        session_id = new_id("sess") if turn.store else None
        payload = completion_object(
            completion_id=turn.completion_id,
            created=turn.created,
            model=turn.model,
            text=text,
            calls=calls,
            reason=reason,
            usage=usage,
            session_id=session_id,
            metadata=turn.body.metadata,
        )
        reply = ChatMessage("assistant", text, calls=calls)

        def store_and_settle() -> tuple[Settlement, Exception | None]:
            """The settlement, and why the transcript was not kept (None: it was). Changes
            nothing outside its transaction: on SQLite the unit may be run again from its start
            on a worker (`kit/loop_units.WouldBlock`)."""
            if session_id is None:  # nothing to store: the settle alone (`Meter.settle_now`)
                settled = meter.settle_now(
                    charge, model=turn.model, usage=payload["usage"], subject_id=payload["id"]
                )
                return settled, None
            # The charge last: the balance row stays locked from its update to the commit.
            return self.database.commit_apart(
                lambda db: self._store(db, turn, payload, reply),
                lambda db: meter.settle_in(
                    db, charge, model=turn.model, usage=payload["usage"], subject_id=payload["id"]
                ),
            )

        try:
            settlement, failed = await self.database.in_worker(store_and_settle, loop_ok=turn.light)
        except BaseException:
            await meter.release()
            raise
        meter.committed(settlement)
        if failed is not None:  # paid for and delivered all the same; the log says why
            log.error(
                "chat_completion_not_stored", completion_id=turn.completion_id, exc_info=failed
            )
            payload.pop("session_id")
            payload.pop("metadata")  # kept with nothing
        return payload, settlement

    def _store(
        self, db: Session, turn: ChatTurn, payload: dict[str, Any], reply: ChatMessage
    ) -> None:
        answer = NewMessage("assistant", record_parts(reply), reply.text)
        CompletionService(db).record(
            turn.caller,
            payload,
            session_id=payload["session_id"],
            metadata=check_metadata(turn.body.metadata),  # checked when planned
            inputs=turn.inputs.records,
            replies=[answer],
        )
