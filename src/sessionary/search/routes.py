"""Samsar's embedding-template routes under /v1/chat/."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from sessionary.accounts.principal import UserCaller
from sessionary.billing.headers import credit_headers
from sessionary.kit.errors import InvalidRequest
from sessionary.kit.json_answer import JSONAnswer
from sessionary.search import answers
from sessionary.search.answers import ingest_summary, template_summary
from sessionary.search.dependencies import AppSearch
from sessionary.search.outcomes import Found, Ingested
from sessionary.search.query import SearchQuery
from sessionary.search.schemas import (
    CreateTemplate,
    DeleteRecords,
    PlainText,
    SearchBody,
    SimilarBody,
    TemplateRef,
    UpdateTemplate,
)

router = APIRouter(prefix="/chat", tags=["embeddings"])


def _ingest_answer(ingested: Ingested) -> JSONAnswer:
    return JSONAnswer(
        ingest_summary(ingested.template), headers=credit_headers(ingested.settlement)
    )


@router.post("/create_embedding", summary="Create an embedding template from JSON records")
async def create_embedding(
    body: CreateTemplate, caller: UserCaller, search: AppSearch
) -> JSONAnswer:
    if body.records is None and body.urls:
        raise InvalidRequest(
            "URL crawling is not available on this server: send the records themselves.",
            param="urls",
        )
    if body.records is None:
        raise InvalidRequest("Missing required parameter: 'records'.", param="records")
    ingested = await search.ingest(
        caller,
        route="/v1/chat/create_embedding",
        records=body.records,
        field_options=body.field_options,
        name=body.name,
    )
    return _ingest_answer(ingested)


@router.post("/create_embedding_from_url", summary="Not available: no crawling here")
def create_embedding_from_url(caller: UserCaller) -> None:
    raise InvalidRequest(
        "URL crawling is not available on this server: send the records themselves "
        "(create_embedding) or the text (generate_embeddings_from_plain_text).",
        param="urls",
        code="crawling_not_supported",
    )


@router.post("/update_embedding", summary="Upsert records into a template")
async def update_embedding(
    body: UpdateTemplate, caller: UserCaller, search: AppSearch
) -> JSONAnswer:
    if body.template_id is None:
        raise InvalidRequest("Missing required parameter: 'template_id'.", param="template_id")
    if body.records is None:
        raise InvalidRequest("Missing required parameter: 'records'.", param="records")
    ingested = await search.ingest(
        caller,
        route="/v1/chat/update_embedding",
        records=body.records,
        field_options=body.field_options,
        template_id=body.template_id,
    )
    return _ingest_answer(ingested)


@router.post(
    "/generate_embeddings_from_plain_text",
    summary="A template from plain text (split into passages)",
)
async def generate_from_plain_text(
    body: PlainText, caller: UserCaller, search: AppSearch
) -> JSONAnswer:
    ingested = await search.ingest_plain_text(
        caller, body, route="/v1/chat/generate_embeddings_from_plain_text"
    )
    return _ingest_answer(ingested)


def _deleted(template: Any, deleted: int) -> dict[str, Any]:
    return {
        "template_id": template.id,
        "deleted_count": deleted,
        "record_count": template.record_count,
        "status": template.status,
    }


@router.post("/delete_embeddings", summary="Empty a template (free)")
def delete_embeddings(body: TemplateRef, caller: UserCaller, search: AppSearch) -> dict[str, Any]:
    template, deleted = search.delete(caller, body.template_id, None)
    return _deleted(template, deleted)


@router.post("/delete_embedding", summary="Delete records by id (free)")
def delete_embedding(body: DeleteRecords, caller: UserCaller, search: AppSearch) -> dict[str, Any]:
    ids: list[Any] = []
    if body.source_id is not None:
        ids.append(body.source_id)
    if body.source_ids is not None:
        if not isinstance(body.source_ids, list):
            raise InvalidRequest("source_ids must be an array of ids.", param="source_ids")
        ids += body.source_ids
    if (
        not ids
        or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids)
        or len(ids) > 10_000
    ):
        raise InvalidRequest("Send source_id or source_ids (up to 10000 ids).", param="source_id")
    template, deleted = search.delete(caller, body.template_id, [str(i) for i in ids])
    return _deleted(template, deleted)


def _filters_and_notice(found: Found) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer's filter fields, and its notice (when the answer is empty) if any."""
    private = found.private
    shown = {
        "structured_filters": answers.public_filters(found.filters, private),
        "applied_filters": answers.applied_filters(found.filters, found.sources, private),
    }
    message = answers.notice(found.filters, private, len(found.hits), found.template.record_count)
    return shown, ({"notice": message} if message else {})


async def _search(
    body: SearchBody, caller: UserCaller, search: AppSearch, route: str
) -> JSONAnswer:
    query = SearchQuery(
        template_id=body.template_id,
        route=route,
        term=body.search_term,
        params=body.search_params,
        forced=body.structured_filters,
        search_date=body.search_date,
        limit=body.limit,
        num_candidates=body.num_candidates,
        rerank=body.rerank,
    )
    found = await search.search(caller, query)
    shown, notice = _filters_and_notice(found)
    private = found.private
    payload: dict[str, Any] = {
        "template_id": found.template.id,
        "template_name": found.template.name,
        **shown,
        "semantic_query": found.semantic_query,
        "results": [answers.result(d, s, body.include_raw, private) for d, s in found.hits],
        **notice,
    }
    return JSONAnswer(payload, headers=credit_headers(found.settlement))


@router.post("/search_against_embedding", summary="Natural-language search in a template")
async def search_against_embedding(
    body: SearchBody, caller: UserCaller, search: AppSearch
) -> JSONAnswer:
    return await _search(body, caller, search, "/v1/chat/search_against_embedding")


@router.post("/search_against_embeddings", summary="Alias of search_against_embedding")
async def search_against_embeddings(
    body: SearchBody, caller: UserCaller, search: AppSearch
) -> JSONAnswer:
    return await _search(body, caller, search, "/v1/chat/search_against_embeddings")


@router.post("/similar_to_embedding", summary="Records similar to a text or a JSON record")
async def similar_to_embedding(
    body: SimilarBody, caller: UserCaller, search: AppSearch
) -> JSONAnswer:
    query = SearchQuery(
        template_id=body.template_id,
        route="/v1/chat/similar_to_embedding",
        term=body.search_term,
        record=body.search_json,
        params=body.search_params,
        forced=body.structured_filters,
        limit=max(body.limit, body.min_results or 0),
        num_candidates=body.num_candidates,
        similar=True,
    )
    found = await search.search(caller, query)
    shown, notice = _filters_and_notice(found)
    payload: dict[str, Any] = {
        "template_id": found.template.id,
        **shown,
        "matches": [{"id": d.source_id, "score": round(s, 6)} for d, s in found.hits],
        **notice,
    }
    return JSONAnswer(payload, headers=credit_headers(found.settlement))


@router.get("/embedding_templates", summary="List templates")
def embedding_templates(
    caller: UserCaller,
    search: AppSearch,
    limit: int = Query(default=50, ge=1, le=100),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
) -> dict[str, Any]:
    rows, total = search.list(caller, limit, offset)
    return {
        "templates": [template_summary(r) for r in rows],
        "pagination": {
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": offset + len(rows) < total,
        },
    }


@router.get("/embedding_status", summary="Whether a template has embeddings")
def embedding_status(
    caller: UserCaller, search: AppSearch, template_id: str | None = None
) -> dict[str, Any]:
    if not template_id:
        raise InvalidRequest("Missing required parameter: 'template_id'.", param="template_id")
    template = search.status(caller, template_id)
    return {
        "template_id": template.id,
        "has_embeddings": template.record_count > 0,
        "record_count": template.record_count,
        "status": template.status,
    }
