"""The assistant's verbs: one turn from a validated request to its outcome, and enhance.

A turn: plan (turns.py: read the conversation, its history and prompts) → fit (count tokens,
truncate) → reserve the worst case → call the provider with no database lock held, or stream it
(streaming.py) → store the transcript and settle the charge, in one transaction (the charge
alone when the transcript fails: `Database.commit_apart`; on PostgreSQL a new session's
whole end is first tried as one statement: `kit/at_once.py`). A failure after the reservation
releases it. Routes hand over a parsed request and get back a `TurnAnswer` or a `TurnStream`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.accounts.models import Account
from sessionary.accounts.service import AccountService
from sessionary.assistant.enhance import enhance, enhance_request
from sessionary.assistant.inputs import is_light
from sessionary.assistant.payloads import (
    function_call_item,
    image_item,
    message_item,
    response_object,
)
from sessionary.assistant.schemas import EnhanceRequest, TurnRequest
from sessionary.assistant.streaming import stream_turn
from sessionary.assistant.turn_billing import (
    TurnAnswer,
    TurnStream,
    counts_at_once,
    stream_with_hold,
    token_counter,
    worst_input_tokens,
)
from sessionary.assistant.turns import Turn, plan_turn
from sessionary.billing.ledger import Owner, Reservation, Settlement
from sessionary.billing.metering import Meter
from sessionary.billing.pricing import Pricing
from sessionary.conversations.background import BackgroundResponses
from sessionary.conversations.models import ConversationSession, StoredResponse
from sessionary.conversations.service import ConversationService, NewMessage
from sessionary.kit.at_once import commit_at_once
from sessionary.kit.db import Database
from sessionary.kit.errors import ApiError, InvalidRequest
from sessionary.kit.ids import new_id
from sessionary.kit.json_answer import json_text
from sessionary.kit.models import utcnow
from sessionary.providers.base import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    FunctionCall,
    ImageRequest,
    Usage,
)
from sessionary.providers.container import Providers

if TYPE_CHECKING:  # the runner calls back into the service
    from sessionary.assistant.background import BackgroundRuns, TurnQueued

log = structlog.get_logger("sessionary.assistant")


def tools_read(turn: Turn) -> str:
    """What the model reads of the tools besides the messages' text: the function definitions
    and the arguments of the calls in the prompt (billed as input tokens like any prompt text)."""
    calls = [c.arguments for m in turn.messages() for c in m.calls]
    return turn.tools.definitions_text() + "".join(calls)


def kept_calls(turn: Turn, calls: tuple[FunctionCall, ...]) -> tuple[FunctionCall, ...]:
    """The calls an answer may make: none when tool_choice is "none", else at most max_calls
    (one when parallel_tool_calls is false)."""
    if turn.tools.choice.mode == "none":
        return ()
    limit = turn.tools.max_calls
    return calls[:limit] if limit is not None else calls


def call_item(call: FunctionCall, status: str = "completed") -> dict[str, Any]:
    return function_call_item(new_id("fc"), call.call_id, call.name, call.arguments, status)


class AssistantService:
    def __init__(
        self,
        database: Database,
        providers: Providers,
        pricing: Pricing,
        background: BackgroundRuns | None = None,
    ) -> None:
        self.database = database
        self.providers = providers
        self.pricing = pricing
        self.background = background  # this process's runner of background responses

    # The verbs routes call

    async def answer(
        self,
        caller: Principal,
        request: TurnRequest,
        *,
        route: str,
        session_id: str | None,
        session_kind: str,
        default_truncation: str,
    ) -> TurnAnswer | TurnStream | TurnQueued:
        """Plan, fit and reserve (errors here are plain JSON answers), then answer or stream;
        a background turn is queued here and runs in the server (background.py).

        The three first steps run in one hand-off to a worker thread: the plan's reads in their
        own transaction, then the reservation in its own short write transaction."""
        default_max = self.database.settings.default_max_output_tokens
        count = token_counter(self.providers.chat())

        def plan_and_hold() -> tuple[Turn, Reservation]:
            with self.database.point_reads() as db:
                turn = plan_turn(
                    db,
                    self.providers,
                    caller,
                    request,
                    route=route,
                    session_id=session_id,
                    session_kind=session_kind,
                    default_truncation=default_truncation,
                    files=self.database.settings.files,
                )
            self.fit(turn, default_max, count)
            return turn, Meter.hold(self.database, turn.owner, self.worst_cost(turn), turn.route)

        # The output schema too: checking it costs its size (0.5 s for 1,600 properties).
        light = is_light([request.input, request.tools, request.text])
        at_once = counts_at_once(self.providers.chat())
        turn, reservation = await self.database.in_worker(
            plan_and_hold,
            waits_elsewhere=not at_once,
            loop_ok=light and at_once,  # a local model's count waits on the model
        )
        turn.light = light
        meter = Meter(self.database, reservation)  # kept alive from here (on the event loop)
        if request.background and self.background is not None:
            return await self.background.queue(self, turn, meter)
        if not request.stream:
            return TurnAnswer(*await self.run(turn, meter))
        return await stream_with_hold(self.database, meter, stream_turn(self, turn, meter))

    async def enhance(self, caller: Principal, body: EnhanceRequest) -> tuple[str, Settlement]:
        """Rewrite a message at the fixed enhance price, released if the model fails."""
        request, max_words = enhance_request(
            body.message, body.language, body.maxwords, body.metadata, Owner.of(caller).party
        )
        chat = self.providers.chat()
        price = self.pricing.enhance()
        meter = await Meter.reserve(
            self.database, Owner.of(caller), price, route="/v1/chat/enhance"
        )
        try:
            content = await enhance(chat, request, max_words)
            settlement = await meter.settle(price, model=chat.name, usage={"requests": 1})
        except BaseException:
            await meter.release()
            raise
        return content, settlement

    def set_account_prompt(
        self, db: Session, caller: Principal, system_prompt: str | None, model: str | None
    ) -> tuple[Account, str]:
        """Store the account's prompt (and chosen model: 400 if not served here); the account
        and the name of the model that answers."""
        chat = self.providers.chat()
        chosen = self.providers.resolve_chat_model(model) if model else None
        account = AccountService(db).set_assistant(
            caller.account_id, system_prompt=system_prompt, model=chosen
        )
        return account, chat.name

    def chat_model_name(self) -> str:
        """The served chat model's name (what answers when nothing else is chosen)."""
        return self.providers.chat().name

    # Fitting and reserving

    def fit(
        self,
        turn: Turn,
        default_max_output_tokens: int,
        count: Callable[[Sequence[ChatMessage]], int],
    ) -> None:
        """Count the prompt; drop the oldest history (truncation=auto) or refuse (disabled).

        The function definitions and the calls' arguments count as input: the model reads them.
        Runs in a worker thread, `count` being `turn_billing.token_counter`.
        """
        chat = self.providers.chat()
        wanted = turn.request.max_output_tokens or default_max_output_tokens

        def prompt_tokens() -> int:
            tools_text = tools_read(turn)
            extra = count([ChatMessage("system", tools_text)]) if tools_text else 0
            return count(turn.messages()) + extra

        tokens = prompt_tokens()
        while tokens + min(wanted, 256) > chat.context_window and turn.history:
            if turn.truncation != "auto":
                raise InvalidRequest(
                    f"The conversation ({tokens} tokens) does not fit the model's context window "
                    f"({chat.context_window}); use truncation=auto or a shorter input.",
                    param="input",
                    code="context_length_exceeded",
                )
            del turn.history[: max(1, len(turn.history) // 8)]
            while turn.history and turn.history[0].role == "tool":  # its call was dropped
                del turn.history[0]
            tokens = prompt_tokens()
        if tokens >= chat.context_window:
            raise InvalidRequest(
                f"The input ({tokens} tokens) does not fit the model's context window "
                f"({chat.context_window}).",
                param="input",
                code="context_length_exceeded",
            )
        turn.input_tokens = tokens
        turn.max_output_tokens = min(wanted, chat.context_window - tokens)

    def cost(self, turn: Turn, usage: Usage, images: int) -> int:
        micro = self.pricing.assistant_turn(turn.model, usage.input_tokens, usage.output_tokens)
        if images:
            quality = (turn.image.options.get("quality") if turn.image else None) or "auto"
            micro += images * self.pricing.image(quality)
        return micro

    def worst_input_tokens(self, turn: Turn) -> int:
        definitions = turn.tools.definitions_text()
        return worst_input_tokens(
            self.providers.chat(), turn.input_tokens, turn.messages(), definitions
        )

    def worst_cost(self, turn: Turn) -> int:
        """What the reservation holds: the cost of the longest answer the turn allows."""
        images = 1 if turn.image or turn.tools.image_offered else 0
        usage = Usage(self.worst_input_tokens(turn), turn.max_output_tokens)
        return self.cost(turn, usage, images)

    # Calling the provider

    def chat_request(self, turn: Turn) -> ChatRequest:
        plan = turn.tools
        return ChatRequest(
            turn.messages(),
            max_output_tokens=turn.max_output_tokens,
            temperature=turn.temperature,
            top_p=turn.request.top_p,
            json_schema=turn.json_schema,
            tools=plan.image_offered,
            functions=plan.functions if plan.choice.mode != "none" else (),
            tool_choice=plan.choice,
            parallel_tool_calls=plan.max_calls != 1,
            presence_penalty=turn.request.presence_penalty,
            frequency_penalty=turn.request.frequency_penalty,
            party=turn.owner.party,
        )

    async def make_image(self, turn: Turn) -> tuple[dict[str, Any], Usage]:
        assert turn.image is not None
        images = self.providers.image_model()
        options = turn.image.options
        request = ImageRequest(
            prompt=turn.image.prompt,
            size=options.get("size"),
            quality=options.get("quality"),
            output_format=options.get("output_format"),
            background=options.get("background"),
            compression=options.get("compression"),
            party=turn.owner.party,
        )
        if turn.image.edit_source:
            result = await images.edit(request, turn.image.edit_source)
        else:
            result = await images.generate(request)
        if not result.b64_images:
            raise InvalidRequest("The images provider returned no image.", param="tools")
        item = image_item(
            new_id("ig"), result.b64_images[0], result.revised_prompt or turn.image.prompt, options
        )
        return item, Usage(turn.input_tokens, 0)

    async def run(self, turn: Turn, meter: Meter) -> tuple[dict[str, Any], Settlement]:
        """The non-streaming turn; the reservation is settled or released before returning,
        whatever fails on the way (an answer of an unexpected shape included)."""
        try:
            if turn.image is not None:
                item, usage = await self.make_image(turn)
                return await self.commit(turn, meter, [item], usage, "completed", images=1)
            result: ChatResult = await self.providers.chat().generate(self.chat_request(turn))
            status = "incomplete" if result.finish_reason == "length" else "completed"
            offered = turn.tools.image_offered  # an image nobody asked for is not delivered
            images = [
                {**item, "id": item.get("id") or new_id("ig")}
                for item in result.items
                if offered and item.get("type") == "image_generation_call"
            ][:1]  # at most the one image the reservation covers
            calls = [call_item(c) for c in kept_calls(turn, result.calls)]
            output = images + (
                [message_item(new_id("msg"), result.text)]
                if result.text or not (images or calls)
                else []
            )
            output += calls
        except BaseException:
            await meter.release()
            raise
        return await self.commit(turn, meter, output, result.usage, status, images=len(images))

    # Recording

    def payload(
        self,
        turn: Turn,
        *,
        session_id: str,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return response_object(
            response_id=turn.response_id,
            created_at=turn.created_at,
            model=turn.model,
            status=status,
            output=output,
            usage=usage,
            request=turn.request,
            tools=turn.tools,
            truncation=turn.truncation,
            temperature=turn.temperature,
            session_id=session_id,
            previous_response_id=turn.previous_response_id,
            instructions=turn.instructions,
            incomplete_reason="max_output_tokens" if status == "incomplete" else None,
            error=error,
        )

    async def commit(
        self,
        turn: Turn,
        meter: Meter,
        output: list[dict[str, Any]],
        usage: Usage,
        status: str,
        images: int = 0,
    ) -> tuple[dict[str, Any], Settlement]:
        """Charge what was produced and store the transcript, in one transaction and one
        hand-off to a worker thread.

        The charge never depends on the transcript: the store runs before it, and a transcript
        that cannot be stored (the session was deleted during the turn) rolls the transaction
        back; the charge then commits alone, and the failure is logged: the output exists (and
        in a stream, has reached the client) (`Database.commit_apart`). When the charge itself
        cannot commit, the hold is released. The charge comes last because it locks the owner's
        balance row until the commit: on PostgreSQL every other turn of that owner waits for it,
        so the transcript's statements no longer run inside that wait (`/v1/responses` at 16
        clients on one worker: 137-186 turns a second before, 222-280 after, same run).

        On PostgreSQL a stored turn first sends all of it, the charge included, as one
        statement in autocommit (`kit/at_once.commit_at_once`): one round trip instead of four
        on a new session (its transcript is plain INSERTs), instead of five on a stored one
        (whose move to this turn gates its messages: `raw_sql.at_once_guard`). That statement
        writes all or nothing; when it cannot be sent or fails (the session was deleted during
        the turn), the transaction above does the work, and decides whose failure it was."""
        try:  # never more than the hold: the usage is the upstream's word, not ours
            charge = min(self.cost(turn, usage, images), meter.reservation.amount_micro)
            payload = self.payload(
                turn, session_id=turn.session_id, status=status, output=output, usage=usage
            )
        except BaseException:
            await meter.release()
            raise

        def store_and_settle() -> tuple[Settlement, Exception | None]:
            """The settlement, and why the transcript was not kept (None: it was). Changes
            nothing outside its transaction: on SQLite the unit may be run again from its start
            on a worker (`kit/loop_units.WouldBlock`)."""
            details: dict[str, Any] = {
                "model": turn.model,
                "usage": payload["usage"],
                "subject_id": turn.response_id,
            }

            def store(db: Session) -> None:
                self._store(db, turn, payload, output)

            if turn.request.store:  # INSERTs, after the guarded move of a stored session
                sent, settled = commit_at_once(
                    self.database, store, lambda db: meter.settle_at_once_in(db, charge, **details)
                )
                if sent and settled is not None:
                    return settled, None
            # The charge last: the owner's balance row stays locked from its update to the
            # commit, which every other turn of that owner waits for on PostgreSQL.
            return self.database.commit_apart(
                store, lambda db: meter.settle_in(db, charge, **details)
            )

        try:
            settlement, failed = await self.database.in_worker(store_and_settle, loop_ok=turn.light)
        except BaseException:
            await meter.release()
            raise
        meter.committed(settlement)
        if isinstance(failed, (ApiError, IntegrityError)):  # the session went away
            log.warning("turn_not_stored", response_id=turn.response_id, reason=str(failed)[:200])
        elif failed is not None:  # paid for and delivered all the same; the log says why
            log.error("turn_not_stored", response_id=turn.response_id, exc_info=failed)
        return payload, settlement

    def _store(
        self, db: Session, turn: Turn, payload: dict[str, Any], output: list[dict[str, Any]]
    ) -> None:
        conversations = ConversationService(db)
        if not turn.session_exists:
            conversation = conversations.create_session(  # inserted with the turn's messages
                turn.caller,
                kind=turn.session_kind,
                session_id=turn.session_id,
                deferred=turn.request.store,
            )
            if turn.request.store:
                self._record(conversations, turn, payload, output, conversation)
        elif turn.request.store:
            self._record(conversations, turn, payload, output)

    @staticmethod
    def _record(
        conversations: ConversationService,
        turn: Turn,
        payload: dict[str, Any],
        output: list[dict[str, Any]],
        new_session: ConversationSession | None = None,
    ) -> None:
        """The turn's messages and its stored response, in the session it was planned on
        (`new_session`: created by this turn, inserted with them). A stored session deleted
        during the turn is NotFound here: the caller rolls the transcript back alone."""
        replies: list[NewMessage] = []
        for item in output:
            if item["type"] == "message":
                replies.append(NewMessage("assistant", item["content"], payload["output_text"]))
            elif item["type"] == "image_generation_call":
                note = f"[generated an image: {item.get('revised_prompt') or ''}]"
                replies.append(NewMessage("assistant", [item], note))
            elif item["type"] == "function_call":
                call = {k: item[k] for k in ("type", "id", "call_id", "name", "arguments")}
                replies.append(
                    NewMessage("assistant", [call], f"{item['name']}({item['arguments']})")
                )
        if new_session is not None:
            input_ids = conversations.record_turn(
                new_session, turn.response_id, turn.inputs, replies
            )
        else:
            input_ids = conversations.record_turn_in(
                turn.session_id, turn.response_id, turn.inputs, replies
            )
        values = {
            **turn.response_columns(),
            "status": payload["status"],
            "payload_json": json_text(payload),
            "input_message_ids": json_text(input_ids),
            "has_image": any(i["type"] == "image_generation_call" for i in output),
            "created_at": utcnow(),
        }
        if turn.request.background:  # stored when queued: it gets its final state
            BackgroundResponses(conversations.store.db).finish(StoredResponse(**values))
        else:
            conversations.store_response(values)
