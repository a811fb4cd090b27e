"""Samsar's embedding-template routes under /v1/chat/."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from sessionary.accounts.identity import Principal
from sessionary.accounts.principal import UserCaller
from sessionary.billing.headers import credit_headers
from sessionary.billing.pricing import Pricing
from sessionary.kit.errors import InvalidRequest
from sessionary.search import answers
from sessionary.search.answers import template_summary
from sessionary.search.detection import private_paths, structured_paths, wordy_paths
from sessionary.search.passages import passages
from sessionary.search.records import build_document, flatten
from sessionary.search.schemas import (
    CreateTemplate,
    DeleteRecords,
    PlainText,
    SearchBody,
    SimilarBody,
    TemplateRef,
    UpdateTemplate,
)
from sessionary.search.service import Found, SearchService

router = APIRouter(prefix="/chat", tags=["embeddings"])

_TEXT_KEYS = (
    "plain_text",
    "plainText",
    "content",
    "text",
    "cleaned_text",
    "cleanedText",
    "markdown",
    "body",
)


def service(request: Request) -> SearchService:
    state = request.app.state
    settings = state.settings
    return SearchService(
        state.db,
        state.providers,
        Pricing(settings.pricing),
        settings.search_exact_limit,
        settings.search.extractor,
        settings.search.max_fields,
    )


def _ingest_answer(ingested: Any) -> JSONResponse:
    return JSONResponse(ingest_payload(ingested), headers=credit_headers(ingested.settlement))


def ingest_payload(ingested: Any) -> dict[str, Any]:
    summary = template_summary(ingested.template)
    keys = (
        "template_id",
        "template_hash",
        "hash_link",
        "record_count",
        "status",
        "structured_fields",
        "unstructured_fields",
        "field_options",
        "embedding_model",
        "name",
    )
    return {k: summary[k] for k in keys}


@router.post("/create_embedding", summary="Create an embedding template from JSON records")
async def create_embedding(
    body: CreateTemplate, caller: UserCaller, request: Request
) -> JSONResponse:
    if body.records is None and body.urls:
        raise InvalidRequest(
            "URL crawling is not available on this server: send the records themselves.",
            param="urls",
        )
    if body.records is None:
        raise InvalidRequest("Missing required parameter: 'records'.", param="records")
    ingested = await service(request).ingest(
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
    body: UpdateTemplate, caller: UserCaller, request: Request
) -> JSONResponse:
    if body.template_id is None:
        raise InvalidRequest("Missing required parameter: 'template_id'.", param="template_id")
    if body.records is None:
        raise InvalidRequest("Missing required parameter: 'records'.", param="records")
    ingested = await service(request).ingest(
        caller,
        route="/v1/chat/update_embedding",
        records=body.records,
        field_options=body.field_options,
        template_id=body.template_id,
    )
    return _ingest_answer(ingested)


def plain_text_records(body: PlainText) -> list[dict[str, Any]]:
    raw = body.entries if body.entries is not None else body.content
    if raw is None:
        raise InvalidRequest(
            "Send the text as plain_text (or texts, entries, content, ...).", param="plain_text"
        )
    entries = raw if isinstance(raw, list) else [raw]
    records: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"content": entry, "url": body.url, "title": body.title}
        if not isinstance(entry, dict):
            raise InvalidRequest(
                "Each entry is a string or an object.", param=f"plain_text[{index}]"
            )
        text = next(
            (entry[k] for k in _TEXT_KEYS if isinstance(entry.get(k), str) and entry[k].strip()),
            None,
        )
        if text is None:
            raise InvalidRequest(
                "An entry needs its text (content, text, ...).", param=f"plain_text[{index}]"
            )
        base = str(entry.get("id") or f"doc{index + 1}")
        pieces = passages(text)
        for number, piece in enumerate(pieces, start=1):
            record = {"id": base if len(pieces) == 1 else f"{base}#{number}", "content": piece}
            for key in ("title", "url", "description", "language"):
                if entry.get(key) is not None:
                    record[key] = entry[key]
            records.append(record)
    return records


@router.post(
    "/generate_embeddings_from_plain_text",
    summary="A template from plain text (split into passages)",
)
async def generate_from_plain_text(
    body: PlainText, caller: UserCaller, request: Request
) -> JSONResponse:
    ingested = await ingest_plain_text(
        body, caller, request, "/v1/chat/generate_embeddings_from_plain_text"
    )
    return _ingest_answer(ingested)


async def ingest_plain_text(
    body: PlainText, caller: Principal, request: Request, route: str
) -> Any:
    options = body.field_options or {"content": {"filterable": False}, "url": {"filterable": False}}
    return await service(request).ingest(
        caller,
        route=route,
        records=plain_text_records(body),
        field_options=options,
        name=body.name,
        plain_text=True,
    )


def _deleted(template: Any, deleted: int) -> dict[str, Any]:
    return {
        "template_id": template.id,
        "deleted_count": deleted,
        "record_count": template.record_count,
        "status": template.status,
    }


@router.post("/delete_embeddings", summary="Empty a template (free)")
def delete_embeddings(body: TemplateRef, caller: UserCaller, request: Request) -> dict[str, Any]:
    template, deleted = service(request).delete(caller, body.template_id, None)
    return _deleted(template, deleted)


@router.post("/delete_embedding", summary="Delete records by id (free)")
def delete_embedding(body: DeleteRecords, caller: UserCaller, request: Request) -> dict[str, Any]:
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
    template, deleted = service(request).delete(caller, body.template_id, [str(i) for i in ids])
    return _deleted(template, deleted)


async def _search(body: SearchBody, caller: Any, request: Request, route: str) -> JSONResponse:
    if not isinstance(body.search_term, str) or not body.search_term.strip():
        raise InvalidRequest("Missing required parameter: 'search_term'.", param="search_term")
    if len(body.search_term) > 2000:
        raise InvalidRequest("search_term is at most 2000 characters.", param="search_term")
    found: Found = await service(request).search(
        caller,
        template_id=body.template_id,
        term=body.search_term,
        params=body.search_params,
        forced=body.structured_filters,
        search_date=body.search_date,
        limit=body.limit,
        num_candidates=body.num_candidates,
        rerank=body.rerank,
        route=route,
    )
    private = found.private
    payload: dict[str, Any] = {
        "template_id": found.template.id,
        "template_name": found.template.name,
        "structured_filters": answers.public_filters(found.filters, private),
        "applied_filters": answers.applied_filters(found.filters, found.sources, private),
        "semantic_query": found.semantic_query,
        "results": [answers.result(d, s, body.include_raw, private) for d, s in found.hits],
    }
    message = answers.notice(found.filters, private, len(found.hits), found.template.record_count)
    if message:
        payload["notice"] = message
    return JSONResponse(payload, headers=credit_headers(found.settlement))


@router.post("/search_against_embedding", summary="Natural-language search in a template")
async def search_against_embedding(
    body: SearchBody, caller: UserCaller, request: Request
) -> JSONResponse:
    return await _search(body, caller, request, "/v1/chat/search_against_embedding")


@router.post("/search_against_embeddings", summary="Alias of search_against_embedding")
async def search_against_embeddings(
    body: SearchBody, caller: UserCaller, request: Request
) -> JSONResponse:
    return await _search(body, caller, request, "/v1/chat/search_against_embeddings")


@router.post("/similar_to_embedding", summary="Records similar to a text or a JSON record")
async def similar_to_embedding(
    body: SimilarBody, caller: UserCaller, request: Request
) -> JSONResponse:
    searcher = service(request)
    term = (
        body.search_term if isinstance(body.search_term, str) and body.search_term.strip() else None
    )
    text = term
    if term is None:
        if not isinstance(body.search_json, dict) or not body.search_json:
            raise InvalidRequest("Send search_term or search_json.", param="search_term")
        template = searcher.status(caller, body.template_id)
        record = flatten(body.search_json, 0)
        wordy = wordy_paths(template.schema)
        text = build_document(
            record,
            template.field_options,
            structured_paths(template.schema),
            wordy,
            private_paths(template.schema),
        ).text
    limit = max(body.limit, body.min_results or 0)
    found = await searcher.search(
        caller,
        template_id=body.template_id,
        term=term,
        text_for_embedding=text,
        params=body.search_params,
        forced=body.structured_filters,
        limit=limit,
        num_candidates=body.num_candidates,
        extract=False,
        route="/v1/chat/similar_to_embedding",
    )
    private = found.private
    payload: dict[str, Any] = {
        "template_id": found.template.id,
        "structured_filters": answers.public_filters(found.filters, private),
        "applied_filters": answers.applied_filters(found.filters, found.sources, private),
        "matches": [{"id": d.source_id, "score": round(s, 6)} for d, s in found.hits],
    }
    message = answers.notice(found.filters, private, len(found.hits), found.template.record_count)
    if message:
        payload["notice"] = message
    return JSONResponse(payload, headers=credit_headers(found.settlement))


@router.get("/embedding_templates", summary="List templates")
def embedding_templates(
    caller: UserCaller,
    request: Request,
    limit: int = Query(default=50, ge=1, le=100),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
) -> dict[str, Any]:
    rows, total = service(request).list(caller, limit, offset)
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
    caller: UserCaller, request: Request, template_id: str | None = None
) -> dict[str, Any]:
    if not template_id:
        raise InvalidRequest("Missing required parameter: 'template_id'.", param="template_id")
    template = service(request).status(caller, template_id)
    return {
        "template_id": template.id,
        "has_embeddings": template.record_count > 0,
        "record_count": template.record_count,
        "status": template.status,
    }
