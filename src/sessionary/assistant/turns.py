"""What one assistant turn is, decided before any credit is held or model called.

`plan_turn` reads the conversation, its history and the prompts that apply (in the caller's read
transaction) and answers a `Turn`; `AssistantService` (service.py) fits, bills, runs and stores it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.accounts.service import AccountService
from sessionary.assistant.inputs import (
    check_call_ids,
    images_of,
    normalise_input,
    to_chat_messages,
    tool_item,
)
from sessionary.assistant.prompts import system_prompt_for
from sessionary.assistant.schemas import TurnRequest
from sessionary.assistant.tools import ToolPlan, plan_tools
from sessionary.billing.ledger import Owner
from sessionary.chatkit.service import CHATKIT_KIND, ChatKitService
from sessionary.conversations.service import ConversationService, NewMessage
from sessionary.conversations.store import SessionRef, TranscriptRow
from sessionary.external.service import ExternalUserService
from sessionary.kit.errors import Forbidden, InvalidRequest
from sessionary.kit.ids import new_id
from sessionary.kit.json_schema import check_schema
from sessionary.kit.metadata import check_metadata
from sessionary.providers.base import ChatMessage
from sessionary.providers.container import Providers
from sessionary.settings.files import FileInputSettings

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
    tools: ToolPlan = field(default_factory=ToolPlan)
    temperature: float | None = None
    response_id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    input_tokens: int = 0
    max_output_tokens: int = 0
    light: bool = False  # `inputs.is_light`: its plan and settle may run on the event loop

    @property
    def owner(self) -> Owner:
        return Owner.of(self.caller)

    def response_columns(self) -> dict[str, Any]:
        """The stored response's columns this turn fixes, whether it is stored when queued
        (background) or when it ends."""
        return {
            "id": self.response_id,
            "session_id": self.session_id,
            "account_id": self.caller.account_id,
            "external_user_id": self.caller.external_user_id,
            "previous_response_id": self.previous_response_id,
            "model": self.model,
        }

    def messages(self) -> list[ChatMessage]:
        new = to_chat_messages(self.inputs, with_images=True)
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


def json_schema_of(text: dict[str, Any] | None, scope: str) -> dict[str, Any] | None:
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
        check_schema(schema, "text.format.schema", scope=scope)
        return schema
    raise InvalidRequest(f"Unsupported text.format type '{kind}'.", param="text.format.type")


LOGPROBS = "message.output_text.logprobs"


def refuse_unhonoured(request: TurnRequest) -> None:
    """Parameters this server cannot honour are a 400 naming them, never a silent change."""
    refused: tuple[str, str] | None = None
    if request.top_logprobs:
        refused = ("top_logprobs", "Log probabilities are not produced here; use 0 or omit it.")
    elif LOGPROBS in (request.include or []):
        refused = ("include", f"'{LOGPROBS}' is not produced here.")
    elif request.service_tier not in (None, "auto", "default"):
        refused = ("service_tier", "Only the 'default' service tier exists here.")
    if refused is not None:
        raise InvalidRequest(refused[1], param=refused[0], code="unsupported_parameter")


BACKGROUND_ROUTE = "/v1/responses"


def _check_background(request: TurnRequest, route: str) -> None:
    """Background turns are the Responses API's, and are stored (they are read back by id)."""
    if not request.background:
        return
    if route != BACKGROUND_ROUTE:
        raise InvalidRequest(
            "Background responses are made with POST /v1/responses.", param="background"
        )
    if not request.store:
        raise InvalidRequest(
            "background=true needs store=true: a background response is read back by its id.",
            param="background",
            code="background_requires_store",
        )


def plan_turn(
    db: Session,
    providers: Providers,
    caller: Principal,
    request: TurnRequest,
    *,
    route: str,
    session_id: str | None,
    session_kind: str,
    default_truncation: str,
    files: FileInputSettings,
) -> Turn:
    """The turn's conversation, history, prompt and model; 400 / 403 / 404 before any charge."""
    _check_background(request, route)
    check_metadata(request.metadata)
    refuse_unhonoured(request)
    tools = plan_tools(request, caller.account_id)
    inputs = normalise_input(request.input, files=files)
    account_prompt = AccountService(db).system_prompt(caller.account_id)
    user = (
        ExternalUserService(db).find(caller.external_user_id) if caller.external_user_id else None
    )
    conversations = ConversationService(db)
    conversation: SessionRef | None = None
    history_rows: list[TranscriptRow] | None = None  # read with the session when it can be
    previous = request.previous_response_id
    if session_id is not None:
        caller = ChatKitService(db).reach(caller, session_id)  # a secret's other threads
        if previous is None:
            conversation, history_rows = conversations.turn_session_and_history(
                caller, session_id, "session_id"
            )
        else:
            conversation = conversations.turn_session(caller, session_id, "session_id")
    if previous is not None:
        stored = conversations.continued_response(caller, previous)
        if stored.status in ("queued", "in_progress"):
            raise InvalidRequest(
                f"The response '{previous}' is still {stored.status}; continue from it once it "
                "has ended.",
                param="previous_response_id",
                code="response_in_progress",
            )
        if conversation is not None and stored.session_id != conversation.id:
            raise InvalidRequest(
                "previous_response_id belongs to another session.",
                param="previous_response_id",
            )
        conversation = conversation or conversations.session_of(stored)
    elif conversation is not None:
        previous = conversation.last_response_id
    if history_rows is None:
        history_rows = (
            conversations.history(conversation, through_response=request.previous_response_id)
            if conversation
            else []
        )
    stored_history = [_stored(row) for row in history_rows]
    check_call_ids(inputs, _call_ids(stored_history), isinstance(request.input, list))
    image = _image_plan(providers, tools, inputs, history_rows, conversations, conversation)
    workflow = (  # only a ChatKit session runs a workflow
        ChatKitService(db).find(conversation.id)
        if conversation is not None and conversation.kind == CHATKIT_KIND
        else None
    )
    if conversation is None and caller.session_scope is not None:
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
    chat = providers.chat()
    # The one model that runs, names the answer and sets the price; an unknown name is a 400.
    model = providers.resolve_chat_model(request.model)
    if caller.session_scope is not None:
        _refuse_workflow_overrides(request, inputs, workflow.temperature if workflow else None)
    if any(images_of(m) for m in inputs) and not chat.supports_vision:
        raise InvalidRequest(
            f"The model '{chat.name}' reads text only; remove the input images or configure "
            "a vision model (SESSIONARY_LLM__VISION=true on a vision-capable server).",
            param="input",
            code="images_not_supported",
        )
    history = to_chat_messages(stored_history, with_images=False)
    return Turn(
        caller=caller,
        request=request,
        route=route,
        session_id=conversation.id if conversation else new_id("sess"),
        session_exists=conversation is not None,
        session_kind=conversation.kind if conversation else session_kind,
        previous_response_id=previous,
        model=model,
        instructions=request.instructions,
        system_prompt=system_prompt_for(
            account_prompt,
            request.instructions or (workflow.instructions if workflow else None),
            user.system_prompt if user else None,
        ),
        history=history,
        inputs=inputs,
        json_schema=json_schema_of(request.text, caller.account_id),
        image=image,
        truncation=request.truncation or default_truncation,
        tools=tools,
        temperature=request.temperature
        if request.temperature is not None
        else (workflow.temperature if workflow else None),
    )


def _stored(row: TranscriptRow) -> NewMessage:
    """A stored message as history: its text, or the function_call / output item it holds."""
    if row.role == "tool" or '"function_call"' in row.content_json:
        return NewMessage(row.role, json.loads(row.content_json), row.text)
    return NewMessage(row.role, [], row.text)


def _call_ids(history: list[NewMessage]) -> set[str]:
    return {
        item["call_id"]
        for item in (tool_item(message) for message in history)
        if item is not None and item["type"] == "function_call"
    }


def _image_plan(
    providers: Providers,
    tools: ToolPlan,
    inputs: list[NewMessage],
    history_rows: list[TranscriptRow],
    conversations: ConversationService,
    conversation: SessionRef | None,
) -> ImagePlan | None:
    tool = tools.image_tool
    if tool is None or not tools.image_forced:
        return None
    providers.image_model()  # 400 naming the setting when there is none
    texts = [m.text for m in inputs if m.role == "user" and m.text]
    texts = texts or [r.text for r in history_rows if r.role == "user" and r.text]
    if not texts:
        raise InvalidRequest("An image turn needs a text prompt.", param="input")
    options = {k: tool[k] for k in IMAGE_OPTIONS if tool.get(k) is not None}
    action = tool.get("action", "auto")
    source = None
    if action != "generate" and conversation is not None:
        source = conversations.latest_image(conversation)
    if action == "edit" and source is None:
        raise InvalidRequest("There is no earlier image in this session to edit.", param="tools")
    return ImagePlan(texts[-1], options, source)
