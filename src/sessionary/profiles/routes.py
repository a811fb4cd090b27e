"""`/v1/assistants`: assistant profiles."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sessionary.accounts.principal import Caller
from sessionary.kit.dependencies import DbSession
from sessionary.kit.ids import ObjectId
from sessionary.kit.pagination import Page, envelope, paginate
from sessionary.profiles.payloads import profile_object
from sessionary.profiles.schemas import ProfileFields
from sessionary.profiles.service import ProfileService
from sessionary.providers.dependencies import AppProviders

router = APIRouter(tags=["assistants"])


@router.post("/assistants", summary="Create an assistant profile")
def create_assistant(
    body: ProfileFields, caller: Caller, db: DbSession, providers: AppProviders
) -> dict[str, Any]:
    model = providers.resolve_chat_model(body.model)  # 400 for a model not served here
    return profile_object(
        ProfileService(db).create(caller, body.model_copy(update={"model": model}), model)
    )


@router.get("/assistants", summary="List assistant profiles")
def list_assistants(caller: Caller, db: DbSession, page: Page) -> dict[str, Any]:
    rows = ProfileService(db).of_account(caller)
    chosen, has_more = paginate(rows, lambda r: r.id, page)
    return envelope([profile_object(r) for r in chosen], has_more)


@router.get("/assistants/{assistant_id}", summary="Retrieve an assistant profile")
def get_assistant(assistant_id: ObjectId, caller: Caller, db: DbSession) -> dict[str, Any]:
    return profile_object(ProfileService(db).owned(caller, assistant_id))


@router.post("/assistants/{assistant_id}", summary="Update an assistant profile")
def update_assistant(
    assistant_id: ObjectId,
    body: ProfileFields,
    caller: Caller,
    db: DbSession,
    providers: AppProviders,
) -> dict[str, Any]:
    if body.model is not None:
        body = body.model_copy(update={"model": providers.resolve_chat_model(body.model)})
    return profile_object(ProfileService(db).update(caller, assistant_id, body))


@router.delete("/assistants/{assistant_id}", summary="Delete an assistant profile")
def delete_assistant(assistant_id: ObjectId, caller: Caller, db: DbSession) -> dict[str, Any]:
    deleted = ProfileService(db).delete(caller, assistant_id)
    return {"id": deleted, "object": "assistant.deleted", "deleted": True}
