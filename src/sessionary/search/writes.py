"""A template's writes, inside the caller's write transaction: a new template row, documents
upserted by source id, and what changes with them (count, content hash, version)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from sessionary.accounts.identity import Principal
from sessionary.kit.ids import new_id
from sessionary.kit.models import utcnow
from sessionary.search.models import EmbeddingTemplate, SearchDocument
from sessionary.search.records import Document
from sessionary.search.store import SearchStore


def new_template(
    caller: Principal,
    name: str | None,
    options: dict[str, Any],
    schema: dict[str, Any],
    embedding_model: str,
    vectors: np.ndarray,
) -> EmbeddingTemplate:
    """The caller's new, empty template (version 0), embedded with `embedding_model`."""
    now = utcnow()
    return EmbeddingTemplate(
        id=new_id("tmpl"),
        account_id=caller.account_id,
        external_user_id=caller.external_user_id,
        name=name,
        field_options=options,
        schema=schema,
        embedding_model=embedding_model,
        dimension=int(vectors.shape[1]) if vectors.ndim == 2 else 0,
        template_hash="",
        record_count=0,
        version=0,
        created_at=now,
        updated_at=now,
    )


def upsert_documents(
    store: SearchStore,
    template: EmbeddingTemplate,
    documents: list[Document],
    vectors: np.ndarray,
) -> None:
    """Insert new source ids, overwrite known ones, then `touch` the template."""
    known = store.existing(template.id, [d.source_id for d in documents])
    fresh: list[SearchDocument] = []
    for document, vector in zip(documents, vectors, strict=True):
        row = known.get(document.source_id)
        if row is None:
            row = SearchDocument(
                id=new_id("doc"),
                template_id=template.id,
                source_id=document.source_id,
                created_at=utcnow(),
            )
            fresh.append(row)
        row.record, row.filters, row.folded = document.record, document.filters, document.folded
        row.text, row.content_hash, row.embedding = document.text, document.content_hash, vector
    store.add_documents(fresh)
    touch(store, template)


def touch(store: SearchStore, template: EmbeddingTemplate) -> None:
    """The template's count and content hash from its documents, and a new version (which every
    cache keyed by version then leaves behind)."""
    template.record_count = store.count(template.id)
    template.template_hash = store.content_digest(
        template.id, json.dumps(template.field_options, sort_keys=True)
    )
    template.version += 1
    template.updated_at = utcnow()
