"""`GET /v1/models` and `GET /v1/models/{id}`: the configured models in OpenAI's shape."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from sessionary.accounts.principal import UserCaller
from sessionary.kit.errors import NotFound
from sessionary.providers.container import Providers, is_local

router = APIRouter(tags=["models"])

# Models have no creation date of their own here; a fixed one keeps the answer stable.
_CREATED = 1_735_689_600  # 2025-01-01


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = _CREATED
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


def get_providers(request: Request) -> Providers:
    providers: Providers = request.app.state.providers
    return providers


AppProviders = Annotated[Providers, Depends(get_providers)]


def _models(providers: Providers) -> list[ModelObject]:
    seen: dict[str, ModelObject] = {}
    for slot in (providers.llm, providers.embeddings, providers.images):
        if slot is not None:
            owner = "sessionary" if is_local(slot) else "openai"
            seen.setdefault(slot.name, ModelObject(id=slot.name, owned_by=owner))
    for alias in providers.chat_model_names()[1:]:
        seen.setdefault(alias, ModelObject(id=alias, owned_by="sessionary (alias)"))
    return list(seen.values())


@router.get("/models", response_model=ModelList, summary="The configured models")
def list_models(caller: UserCaller, providers: AppProviders) -> ModelList:
    return ModelList(data=_models(providers))


@router.get("/models/{model_id:path}", response_model=ModelObject, summary="One configured model")
def retrieve_model(model_id: str, caller: UserCaller, providers: AppProviders) -> ModelObject:
    for model in _models(providers):
        if model.id == model_id:
            return model
    raise NotFound(f"No model '{model_id}' is configured.", param="model")
