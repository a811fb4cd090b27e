"""Request shapes of the embedding routes, with every alias samsar-js sends, and OpenAI's
`POST /v1/embeddings` body."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


def _alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CreateTemplate(_Body):
    records: Any = None
    name: str | None = Field(
        default=None,
        max_length=256,
        validation_alias=AliasChoices("name", "embedding_name", "template_name"),
    )
    field_options: Any = _alias("field_options", "fieldOptions")
    urls: Any = _alias("urls", "url")


class UpdateTemplate(_Body):
    template_id: Any = _alias("template_id", "templateId")
    records: Any = None
    field_options: Any = _alias("field_options", "fieldOptions")


class PlainText(_Body):
    entries: Any = _alias(
        "plain_text",
        "plainText",
        "plain_texts",
        "plainTexts",
        "texts",
        "documents",
        "items",
        "entries",
    )
    content: Any = _alias("content", "text", "cleaned_text", "cleanedText", "markdown", "body")
    url: str | None = None
    title: str | None = None
    description: str | None = None
    language: str | None = None
    name: str | None = Field(
        default=None,
        max_length=256,
        validation_alias=AliasChoices("name", "embedding_name", "template_name"),
    )
    field_options: Any = _alias("field_options", "fieldOptions")


class TemplateRef(_Body):
    template_id: Any = _alias("template_id", "templateId")


class DeleteRecords(TemplateRef):
    source_id: Any = _alias("source_id", "sourceId", "id", "record_id", "recordId")
    source_ids: Any = _alias("source_ids", "sourceIds", "ids", "record_ids", "recordIds")


class SearchBody(TemplateRef):
    search_term: Any = _alias("search_term", "searchTerm", "query")
    search_date: date | None = _alias("search_date", "searchDate")
    structured_filters: Any = _alias("structured_filters", "filters", "structuredFilters")
    search_params: Any = _alias("search_params", "searchParams")
    limit: int = Field(default=10, ge=1, le=100, strict=True)
    num_candidates: int | None = Field(
        strict=True,
        default=None,
        ge=1,
        le=10_000,
        validation_alias=AliasChoices("num_candidates", "numCandidates"),
    )
    rerank: bool = False
    include_raw: bool = Field(
        default=True, validation_alias=AliasChoices("include_raw", "includeRaw")
    )


class SimilarBody(SearchBody):
    search_json: Any = _alias("search_json", "searchJson", "search_record", "searchRecord")
    min_results: int | None = Field(
        strict=True,
        default=None,
        ge=1,
        le=100,
        validation_alias=AliasChoices("min_results", "minResults"),
    )


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings body (also samsar-js's `createExternalEmbeddings`)."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[Any]
    model: str | None = Field(default=None, max_length=200)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65_536, strict=True)
    user: str | None = Field(default=None, max_length=256)
