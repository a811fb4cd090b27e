"""The body of an assistant profile, as OpenAI's Assistants API sends it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class ProfileFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=256_000)
    model: str | None = Field(default=None, max_length=200)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)
    metadata: Any = None


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOOL_NAME)
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(BaseModel):
    """A function tool as the Assistants API defines it (no other keys)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec


class CodeInterpreterTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["code_interpreter"]


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranker: str | None = Field(default=None, max_length=64)
    score_threshold: float | None = Field(default=None, ge=0, le=1)


class FileSearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_num_results: int | None = Field(default=None, ge=1, le=50, strict=True)
    ranking_options: RankingOptions | None = None


class FileSearchTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["file_search"]
    file_search: FileSearchOptions | None = None


# Every kind of tool an assistant profile holds, by its `type`.
TOOL_KINDS: dict[str, type[BaseModel]] = {
    "function": FunctionTool,
    "code_interpreter": CodeInterpreterTool,
    "file_search": FileSearchTool,
}
