"""One assistant turn, from a validated request to a stored, billed Responses payload.

plan (read the session, its history and prompts) → fit (count tokens, truncate) → reserve the
worst case → call the provider with no database lock held → in one transaction: settle the
charge, append the messages, store the response. A failure after the reservation releases it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import structlog
from sqlalchemy.exc import IntegrityError

from sessionary.accounts.identity import Principal
from sessionary.accounts.service import AccountService
from sessionary.assistant.inputs import images_of, normalise_input, to_chat
from sessionary.assistant.payloads import image_item, message_item, response_object
from sessionary.assistant.prompts import system_prompt_for
from sessionary.assistant.schemas import TurnRequest
from sessionary.billing.ledger import Owner, Settlement
from sessionary.billing.metering import Meter, release, reserve, settle
from sessionary.billing.pricing import Pricing
from sessionary.chatkit.store import ChatKitStore
from sessionary.conversations.models import ConversationSession, StoredResponse
from sessionary.conversations.service import ConversationService, NewMessage, check_id
from sessionary.external.store import ExternalUserStore
from sessionary.kit.db import Database
from sessionary.kit.errors import ApiError, Forbidden, InvalidRequest
from sessionary.kit.ids import new_id
from sessionary.kit.metadata import check_metadata
from sessionary.kit.models import utcnow
from sessionary.providers.base import ChatMessage, ChatRequest, ChatResult, ImageRequest, Usage
from sessionary.providers.container import Providers, is_local

log = structlog.get_logger("sessionary.assistant")

IMAGE_OPTIONS = ("size", "quality", "output_format", "background", "compression", "partial_images")


@dataclass
class ImagePlan:
    prompt: str
    options: dict[str, Any]
    edit_source: str | None


@dataclass
class Turn:
    """Everything decided before the provider is called."""

    caller: Principal
    request: TurnRequest
    route: str
    session_id: str
    session_exists: bool  # False: the session is created, with this id, when the turn is stored
    session_kind: str
    previous_response_id: str | None
    model: str
    instructions: str | None
    system_prompt: str
    history: list[ChatMessage]
    inputs: list[NewMessage]
    json_schema: dict[str, Any] | None
    image: ImagePlan | None
    truncation: str
    temperature: float | None = None
    response_id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    input_tokens: int = 0
    max_output_tokens: int = 0

    @property
    def owner(self) -> Owner:
        return Owner.of(self.caller)

    def messages(self) -> list[ChatMessage]:
        new = [to_chat(m, with_images=True) for m in self.inputs]
        return [ChatMessage("system", self.system_prompt), *self.history, *new]


def _refuse_workflow_overrides(
    request: TurnRequest, inputs: list[NewMessage], workflow_temperature: float | None
) -> None:
    """A client secret runs its workflow as configured: no instructions of its own, no system
    or developer messages, and no sampling the workflow already fixes."""
    overridden = None
    if request.instructions is not None:
        overridden = "instructions"
    elif any(m.role in ("system", "developer") for m in inputs):
        overridden = "input"
    elif workflow_temperature is not None and request.temperature is not None:
        overridden = "temperature"
    if overridden is not None:
        raise InvalidRequest(
            f"A client secret runs its workflow's instructions and settings; '{overridden}' "
            "(or a system/developer message) may not be set with it.",
            param=overridden,
            code="client_secret_cannot_override",
        )


def json_schema_of(text: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = (text or {}).get("format") or {}
    kind = fmt.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("text.format json_schema needs a 'schema' object.", param="text")
        return schema
    raise InvalidRequest(f"Unsupported text.format type '{kind}'.", param="text.format.type")


def offered_image_tools(request: TurnRequest) -> tuple[dict[str, Any], ...]:
    """image_generation tools offered without forcing: a Responses-capable model may use them."""
    if forced_image_tool(request) is not None:
        return ()
    return tuple(t for t in request.tools or [] if t.get("type") == "image_generation")


def forced_image_tool(request: TurnRequest) -> dict[str, Any] | None:
    """The image_generation tool when the request forces it (the local model cannot choose)."""
    tool = next((t for t in request.tools or [] if t.get("type") == "image_generation"), None)
    if tool is None:
        return None
    choice = request.tool_choice
    forced = choice == "required" or (
        isinstance(choice, dict) and choice.get("type") == "image_generation"
    )
    return tool if forced else None


class TurnService:
    def __init__(self, db: Database, providers: Providers, pricing: Pricing) -> None:
        self.db = db
        self.providers = providers
        self.pricing = pricing

    # Planning (database reads, on a worker thread)

    def _plan_sync(
        self,
        caller: Principal,
        request: TurnRequest,
        *,
        route: str,
        session_id: str | None,
        session_kind: str,
        default_truncation: str,
    ) -> Turn:
        if request.background:
            raise InvalidRequest("Background responses are not supported.", param="background")
        check_metadata(request.metadata)
        inputs = normalise_input(request.input)
        with self.db.session(write=False) as db_session:
            account = AccountService(db_session).get_account(caller.account_id)
            user = (
                ExternalUserStore(db_session).get(caller.external_user_id)
                if caller.external_user_id
                else None
            )
            conversations = ConversationService(db_session)
            session: ConversationSession | None = None
            previous = request.previous_response_id
            if session_id is not None:
                session = conversations.owned_session(caller, session_id, "session_id")
            if previous is not None:
                stored = conversations.owned_response(
                    caller, check_id(previous, "previous_response_id")
                )
                if session is not None and stored.session_id != session.id:
                    raise InvalidRequest(
                        "previous_response_id belongs to another session.",
                        param="previous_response_id",
                    )
                session = session or conversations.store.get_session(stored.session_id)
            elif session is not None:
                previous = session.last_response_id
            history_rows = (
                conversations.history(session, through_response=request.previous_response_id)
                if session
                else []
            )
            image = self._image_plan(request, inputs, history_rows, conversations, session)
            chatkit = ChatKitStore(db_session).get(session.id) if session is not None else None
        if session is None and caller.session_scope is not None:
            raise Forbidden(
                "A client secret makes turns on its own session only: pass it as the conversation.",
                param="conversation",
                code="client_secret_forbidden",
            )
        if not inputs and not history_rows:
            raise InvalidRequest(
                "input is required: this session has no history to answer from yet.",
                param="input",
            )
        chat = self.providers.chat()
        # The one model that runs, names the answer and sets the price; an unknown name is a 400.
        model = self.providers.resolve_chat_model(request.model)
        if caller.session_scope is not None:
            _refuse_workflow_overrides(request, inputs, chatkit.temperature if chatkit else None)
        if any(images_of(m) for m in inputs) and not chat.supports_vision:
            raise InvalidRequest(
                f"The model '{chat.name}' reads text only; remove the input images or configure "
                "a vision model (SESSIONARY_LLM__VISION=true on a vision-capable server).",
                param="input",
                code="images_not_supported",
            )
        history = [
            ChatMessage(
                row.role if row.role in ("user", "assistant", "system", "developer") else "user",  # type: ignore[arg-type]
                row.text,
            )
            for row in history_rows
        ]
        return Turn(
            caller=caller,
            request=request,
            route=route,
            session_id=session.id if session else new_id("sess"),
            session_exists=session is not None,
            session_kind=session.kind if session else session_kind,
            previous_response_id=previous,
            model=model,
            instructions=request.instructions,
            system_prompt=system_prompt_for(
                account,
                request.instructions or (chatkit.instructions if chatkit else None),
                user.system_prompt if user else None,
            ),
            history=history,
            inputs=inputs,
            json_schema=json_schema_of(request.text),
            image=image,
            truncation=request.truncation or default_truncation,
            temperature=request.temperature
            if request.temperature is not None
            else (chatkit.temperature if chatkit else None),
        )

    def _image_plan(
        self,
        request: TurnRequest,
        inputs: list[NewMessage],
        history_rows: list[Any],
        conversations: ConversationService,
        session: ConversationSession | None,
    ) -> ImagePlan | None:
        tool = forced_image_tool(request)
        if tool is None:
            return None
        self.providers.image_model()  # 400 naming the setting when there is none
        texts = [m.text for m in inputs if m.role == "user" and m.text]
        texts = texts or [r.text for r in history_rows if r.role == "user" and r.text]
        if not texts:
            raise InvalidRequest("An image turn needs a text prompt.", param="input")
        options = {k: tool[k] for k in IMAGE_OPTIONS if tool.get(k) is not None}
        action = tool.get("action", "auto")
        source = None
        if action != "generate" and session is not None:
            source = conversations.latest_image(session)
        if action == "edit" and source is None:
            raise InvalidRequest(
                "There is no earlier image in this session to edit.", param="tools"
            )
        return ImagePlan(texts[-1], options, source)

    async def plan(self, caller: Principal, request: TurnRequest, **kwargs: Any) -> Turn:
        return await anyio.to_thread.run_sync(lambda: self._plan_sync(caller, request, **kwargs))

    # Fitting and reserving

    async def fit(self, turn: Turn, default_max_output_tokens: int) -> None:
        """Count the prompt; drop the oldest history (truncation=auto) or refuse (disabled)."""
        chat = self.providers.chat()
        wanted = turn.request.max_output_tokens or default_max_output_tokens
        tokens = await chat.count_tokens(turn.messages())
        while tokens + min(wanted, 256) > chat.context_window and turn.history:
            if turn.truncation != "auto":
                raise InvalidRequest(
                    f"The conversation ({tokens} tokens) does not fit the model's context window "
                    f"({chat.context_window}); use truncation=auto or a shorter input.",
                    param="input",
                    code="context_length_exceeded",
                )
            del turn.history[: max(1, len(turn.history) // 8)]
            tokens = await chat.count_tokens(turn.messages())
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
        """The prompt's tokens as a ceiling: exact for the local model (its own tokenizer); for a
        remote one, whose tokenizer is not here, the UTF-8 bytes (a byte-level token covers at
        least one byte), so a prompt in any script cannot cost more than its hold."""
        if is_local(self.providers.chat()):
            return turn.input_tokens
        ceiling = sum(len(m.text.encode("utf-8")) + 8 for m in turn.messages())
        return max(turn.input_tokens, ceiling)

    async def reserve(self, turn: Turn) -> Meter:
        images = 1 if turn.image or offered_image_tools(turn.request) else 0
        usage = Usage(self.worst_input_tokens(turn), turn.max_output_tokens)
        worst = self.cost(turn, usage, images)
        return await reserve(self.db, turn.owner, worst, route=turn.route)

    # Calling the provider

    def chat_request(self, turn: Turn, *, offer_tools: bool = True) -> ChatRequest:
        return ChatRequest(
            turn.messages(),
            max_output_tokens=turn.max_output_tokens,
            temperature=turn.temperature,
            top_p=turn.request.top_p,
            json_schema=turn.json_schema,
            tools=offered_image_tools(turn.request) if offer_tools else (),
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
        """The non-streaming turn; the reservation is settled or released before returning."""
        try:
            if turn.image is not None:
                item, usage = await self.make_image(turn)
                return await self.commit(turn, meter, [item], usage, "completed", images=1)
            result: ChatResult = await self.providers.chat().generate(self.chat_request(turn))
        except BaseException:
            await release(meter)
            raise
        status = "incomplete" if result.finish_reason == "length" else "completed"
        images = [
            {**item, "id": item.get("id") or new_id("ig")}
            for item in result.items
            if item.get("type") == "image_generation_call"
        ][:1]  # at most the one image the reservation covers
        output = images + (
            [message_item(new_id("msg"), result.text)] if result.text or not images else []
        )
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
        """Charge what was produced, then store the transcript, in that order.

        The charge commits on its own first: the output exists (and in a stream, has reached the
        client) whatever happens to the session meanwhile. A transcript that cannot be stored
        (the session was deleted during the turn) is logged and the answer still delivered.
        """
        charge = self.cost(turn, usage, images)
        payload = self.payload(
            turn, session_id=turn.session_id, status=status, output=output, usage=usage
        )
        try:
            settlement = await settle(
                meter, charge, model=turn.model, usage=payload["usage"], subject_id=turn.response_id
            )
        except BaseException:
            await release(meter)
            raise
        try:
            await anyio.to_thread.run_sync(lambda: self._store(turn, payload, output))
        except (ApiError, IntegrityError) as exc:  # the session went away during the turn
            log.warning("turn_not_stored", response_id=turn.response_id, reason=str(exc)[:200])
        except Exception:  # paid for and delivered all the same; the log says why not stored
            log.exception("turn_not_stored", response_id=turn.response_id)
        return payload, settlement

    def _store(self, turn: Turn, payload: dict[str, Any], output: list[dict[str, Any]]) -> None:
        with self.db.session() as db_session:
            conversations = ConversationService(db_session)
            if not turn.session_exists:
                session = conversations.create_session(
                    turn.caller, kind=turn.session_kind, session_id=turn.session_id
                )
            else:
                session = conversations.owned_session(turn.caller, turn.session_id, "session_id")
            if turn.request.store:
                self._record(conversations, session, turn, payload, output)

    @staticmethod
    def _record(
        conversations: ConversationService,
        session: ConversationSession,
        turn: Turn,
        payload: dict[str, Any],
        output: list[dict[str, Any]],
    ) -> None:
        replies: list[NewMessage] = []
        for item in output:
            if item["type"] == "message":
                replies.append(NewMessage("assistant", item["content"], payload["output_text"]))
            elif item["type"] == "image_generation_call":
                note = f"[generated an image: {item.get('revised_prompt') or ''}]"
                replies.append(NewMessage("assistant", [item], note))
        input_ids = conversations.record_turn(session, turn.response_id, turn.inputs, replies)
        conversations.store_response(
            StoredResponse(
                id=turn.response_id,
                session_id=session.id,
                account_id=turn.caller.account_id,
                external_user_id=turn.caller.external_user_id,
                previous_response_id=turn.previous_response_id,
                model=turn.model,
                status=payload["status"],
                payload_json=json.dumps(payload),
                input_message_ids=json.dumps(input_ids),
                has_image=any(i["type"] == "image_generation_call" for i in output),
                created_at=utcnow(),
            )
        )
