"""`GET /v1/models` and `GET /v1/models/{id}`: the configured models in OpenAI's shape."""

from __future__ import annotations

from fastapi import APIRouter

from sessionary.accounts.principal import UserCaller
from sessionary.kit.errors import NotFound
from sessionary.providers.container import Providers
from sessionary.providers.dependencies import AppProviders
from sessionary.providers.schemas import ModelList, ModelObject
from sessionary.providers.service import served_models

router = APIRouter(tags=["models"])


def _models(providers: Providers) -> list[ModelObject]:
    return [ModelObject(id=name, owned_by=owner) for name, owner in served_models(providers)]


@router.get("/models", response_model=ModelList, summary="The configured models")
def list_models(caller: UserCaller, providers: AppProviders) -> ModelList:
    return ModelList(data=_models(providers))


@router.get("/models/{model_id:path}", response_model=ModelObject, summary="One configured model")
def retrieve_model(model_id: str, caller: UserCaller, providers: AppProviders) -> ModelObject:
    for model in _models(providers):
        if model.id == model_id:
            return model
    raise NotFound(f"No model '{model_id}' is configured.", param="model")
