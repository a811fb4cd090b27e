"""OpenAI's model objects, as `GET /v1/models` answers them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

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
