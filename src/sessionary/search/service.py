"""Rules for embedding templates: ingest records, and search them with extracted filters.

The verbs routes call: `ingest` (and `ingest_plain_text`), `delete`, `search` (a `SearchQuery`),
`embeddings` (raw vectors), `list` and `status`. A search: check the query (query.py) → plan in
one read transaction (the template, extracted and given filters) → check the balance (a model in
this process) or reserve (a model elsewhere) and embed the query → retrieve (retrieval.py) →
charge or settle → `Found`, which the route shapes with answers.py.

Embedding happens before any write transaction, so no lock is held while the model works;
documents, counts, hash and version then change in one transaction (the template row locked on
PostgreSQL, the database's write lock on SQLite), so racing upserts of the same ids never
duplicate. Inputs are billed at the embedding price through `Meter` (reserve, then settle; a
search whose query a model in this process embeds: a balance check, then one conditional charge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import Any

import anyio.to_thread
import numpy as np
from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.billing.ledger import Owner, Reservation
from sessionary.billing.metering import Meter
from sessionary.billing.pricing import Pricing
from sessionary.kit.db import Database
from sessionary.kit.errors import InvalidRequest, NotFound
from sessionary.kit.light import is_light
from sessionary.kit.loop_units import from_worker
from sessionary.providers.base import (
    ChatRequest,
    ChatResult,
    count_from_worker,
    embeds_in_process,
)
from sessionary.providers.container import Providers
from sessionary.search import detection, llm_extraction
from sessionary.search.ann import AnnPolicy
from sessionary.search.extraction import EXTRACTORS, REMEMBERED_TERMS
from sessionary.search.extraction import Extractor as Rules
from sessionary.search.filters import validate
from sessionary.search.limits import MAX_FIELDS, MAX_LIMIT, check_fields, check_records
from sessionary.search.models import EmbeddingTemplate
from sessionary.search.outcomes import Found, Ingested, Plan
from sessionary.search.plain_text import DEFAULT_OPTIONS, plain_text_records
from sessionary.search.query import SearchQuery, checked_term, record_text
from sessionary.search.query_vectors import QueryVectors, cache_scope
from sessionary.search.raw_embeddings import Embedded, same_model, texts_of
from sessionary.search.records import build_document, flatten, parse_field_options
from sessionary.search.retrieval import Retrieved, retrieve_planned
from sessionary.search.schemas import EmbeddingsRequest, PlainText
from sessionary.search.store import SearchStore
from sessionary.search.vocabulary import Semantic
from sessionary.search.writes import new_template, touch, upsert_documents
from sessionary.settings.search import Extractor

# Up to this many candidates PostgreSQL scores exactly (recall 1.0); beyond, it uses HNSW.
EXACT_SEARCH_LIMIT = 20_000


class SearchService:
    def __init__(
        self,
        db: Database,
        providers: Providers,
        pricing: Pricing,
        exact_limit: int = EXACT_SEARCH_LIMIT,
        extractor: Extractor = "rules",
        max_fields: int = MAX_FIELDS,
        query_vectors: QueryVectors | None = None,
        ann: AnnPolicy | None = None,
    ) -> None:
        self.db = db
        self.providers = providers
        self.pricing = pricing
        self.exact_limit = exact_limit
        self.extractor = extractor
        self.max_fields = max_fields
        self.query_vectors = query_vectors if query_vectors is not None else QueryVectors(1024)
        self.ann = ann or AnnPolicy()

    # Access

    def owned(
        self,
        store: SearchStore,
        caller: Principal,
        template_id: Any,
        *,
        lock: bool = False,
        detached: bool = False,
    ) -> EmbeddingTemplate:
        """The caller's template, or 404/403. `detached` reads a copy for reading only."""
        if template_id is None or template_id == "":
            raise InvalidRequest("Missing required parameter: 'template_id'.", param="template_id")
        if not isinstance(template_id, str):
            raise InvalidRequest("'template_id' must be a string.", param="template_id")
        if detached:
            template = store.read_template(template_id)
        else:
            template = store.get_template(template_id, lock=lock)
        if template is None:
            raise NotFound(f"No embedding template '{template_id}'.", param="template_id")
        caller.check_reach(
            template.account_id, template.external_user_id, "template", "template_id"
        )
        return template

    # Embedding, billed

    async def _embed(
        self, owner: Owner, texts: list[str], route: str, *, plain_text: bool = False
    ) -> tuple[np.ndarray, Meter, int]:
        embedder = self.providers.embedder()
        # Held from the embedder's own count: a per-character guess held about five times the
        # charge and refused funded callers.
        worst = self.pricing.embedding(await embedder.count_tokens(texts), plain_text=plain_text)
        meter = await Meter.reserve(self.db, owner, worst, route=route)
        try:
            batch = await embedder.embed(texts, owner.party)
        except BaseException:
            await meter.release()
            raise
        return np.asarray(batch.vectors, dtype=np.float32), meter, batch.input_tokens

    async def embeddings(self, caller: Principal, body: EmbeddingsRequest, route: str) -> Embedded:
        """Vectors for texts, billed to the caller at the embedding price (no template)."""
        embedder = self.providers.embedder()
        if body.model is not None and not same_model(body.model, embedder.name):
            raise InvalidRequest(
                f"The model '{body.model}' is not served here; the embedding model is "
                f"'{embedder.name}'.",
                param="model",
                code="model_not_found",
            )
        if body.dimensions is not None and body.dimensions != embedder.dimension:
            raise InvalidRequest(
                f"'{embedder.name}' gives {embedder.dimension} dimensions, not {body.dimensions}.",
                param="dimensions",
            )
        texts = texts_of(body.input)
        vectors, meter, tokens = await self._embed(Owner.of(caller), texts, route)
        try:
            settlement = await meter.settle(
                self.pricing.embedding(tokens),
                model=embedder.name,
                usage={"input_tokens": tokens},
            )
        except BaseException:
            await meter.release()
            raise
        return Embedded(vectors, tokens, embedder.name, embedder.dimension, settlement)

    # Ingest

    async def ingest(
        self,
        caller: Principal,
        *,
        route: str,
        records: Any,
        field_options: Any,
        name: str | None = None,
        template_id: str | None = None,
        plain_text: bool = False,
    ) -> Ingested:
        rows = check_records(records)
        given_options = parse_field_options(field_options) if field_options is not None else None
        flat = [flatten(record, i) for i, record in enumerate(rows)]
        if len({r.source_id for r in flat}) != len(flat):
            raise InvalidRequest("Two records in this call share an id.", param="records")
        existing = None
        if template_id is not None:
            existing = await anyio.to_thread.run_sync(
                lambda: self._read_template(caller, template_id)
            )
        check_fields(flat, existing.schema if existing else None, self.max_fields)
        options = (
            given_options
            if given_options is not None
            else (existing.field_options if existing else {})
        )
        batch = detection.detect(flat, options)
        # Documents are built against the template as it will be; the stored schema merges this
        # batch's statistics once, under the template's lock (merging `schema` there would count
        # the existing records twice and turn free text into categories).
        schema = detection.merge(existing.schema, batch) if existing is not None else batch
        structured = detection.structured_paths(schema)
        wordy = detection.wordy_paths(schema)
        private = detection.private_paths(schema)
        documents = [build_document(r, options, structured, wordy, private) for r in flat]
        owner = Owner.of(caller)
        vectors, meter, tokens = await self._embed(
            owner, [d.text for d in documents], route, plain_text=plain_text
        )
        price = self.pricing.embedding(tokens, plain_text=plain_text)

        def store_all() -> Ingested:
            with self.db.session() as session:
                store = SearchStore(session)
                if template_id is None:
                    template = store.add_template(
                        new_template(
                            caller, name, options, schema, self.providers.embedder().name, vectors
                        )
                    )
                else:
                    template = self.owned(store, caller, template_id, lock=True)
                    template.schema = detection.merge(template.schema, batch)
                    template.field_options = options
                upsert_documents(store, template, documents, vectors)
                if store.dialect == "postgresql" and template.record_count > self.exact_limit:
                    store.ensure_vector_index(template.dimension)
                settlement = meter.settle_in(
                    session,
                    price,
                    model=self.providers.embedder().name,
                    usage={"input_tokens": tokens, "records": len(documents)},
                    subject_id=template.id,
                )
                return Ingested(template, settlement)

        try:
            return await anyio.to_thread.run_sync(store_all)
        except BaseException:
            await meter.release()
            raise

    async def ingest_plain_text(
        self, caller: Principal, body: PlainText, *, route: str
    ) -> Ingested:
        """A new template from plain text: each entry's passages become its records."""
        return await self.ingest(
            caller,
            route=route,
            records=plain_text_records(body),
            field_options=body.field_options or DEFAULT_OPTIONS,
            name=body.name,
            plain_text=True,
        )

    def _read_template(self, caller: Principal, template_id: str) -> EmbeddingTemplate:
        with self.db.session(write=False) as session:
            return self.owned(SearchStore(session), caller, template_id)

    # Delete

    def delete(
        self, caller: Principal, template_id: Any, source_ids: list[str] | None
    ) -> tuple[EmbeddingTemplate, int]:
        with self.db.session() as session:
            store = SearchStore(session)
            template = self.owned(store, caller, template_id, lock=True)
            deleted = store.delete_documents(template.id, source_ids)
            touch(store, template)
            return template, deleted

    # Search

    def _plan(self, caller: Principal, owner: Owner, query: SearchQuery, term: str | None) -> Plan:
        """The template, the filters (extracted from the term, then the caller's own), the
        semantic part of the term, where each filter came from, and the text to embed.

        Extraction may run a model (the embedding model on words the template's extractor has
        not met, or the chat model): a caller whose balance cannot pay for the smallest query
        (one token) is refused first, so a key with no credits cannot make models run."""
        with self.db.point_reads() as session:
            template = self.owned(SearchStore(session), caller, query.template_id, detached=True)
            Meter.ensure_covered(session, owner, self.pricing.embedding(1))
        text = record_text(template, query.record) if term is None else None
        filters: dict[str, Any] = {}
        semantic = term or ""
        if not query.similar and term:
            filters, semantic = self._extract(template, term, query.search_date, owner.party)
        sources = dict.fromkeys(filters, "query")
        for param, raw in (("search_params", query.params), ("structured_filters", query.forced)):
            given = validate(raw, template.schema, param)
            filters.update(given)
            sources.update(dict.fromkeys(given, param))
        return Plan(template, filters, semantic, sources, text or semantic)

    def _extract(
        self, template: EmbeddingTemplate, term: str, search_date: date | None, party: str
    ) -> tuple[dict[str, Any], str]:
        """Rules, the chat model, or both (`SESSIONARY_SEARCH__EXTRACTOR`); in a worker thread."""
        filters: dict[str, Any] = {}
        semantic = term
        if self.extractor in ("rules", "both"):
            rules = self._rules(template)
            filters, rest = rules.extract(term, search_date)
            semantic = rest or term
        if self.extractor in ("llm", "both"):
            chat = self.providers.chat()

            def generate(request: ChatRequest) -> ChatResult:
                return from_worker(chat.generate, replace(request, party=party))

            filters = llm_extraction.merge(
                filters, llm_extraction.extract(template.schema, term, generate)
            )
        return filters, semantic

    def _rules(self, template: EmbeddingTemplate) -> Rules:
        """The template's rules extractor, built once per version and embedding model (keyed by
        the model object: two apps in one process never share one). It remembers answers when
        the query cache is on."""
        embedder = self.providers.embeddings
        remember = REMEMBERED_TERMS if self.query_vectors.size > 0 else 0
        key = (template.id, template.version, template.updated_at, id(embedder), remember)
        return EXTRACTORS.get(
            key,
            lambda: Rules(template.schema, template.field_options, self._semantic(), remember),
        )

    def _semantic(self) -> Semantic | None:
        """Word similarity for the extractor, through the configured embedding model (called
        from a worker thread: the model's own loop runs the call)."""
        embedder = self.providers.embeddings
        if embedder is None:
            return None

        def embed(texts: Sequence[str]) -> np.ndarray:
            batch = from_worker(embedder.embed, list(texts))
            return np.asarray(batch.vectors, dtype=np.float32)

        return Semantic(embedder.name, embed)

    async def search(self, caller: Principal, query: SearchQuery) -> Found:
        """Check the query, plan its filters, embed it (billed), rank, and charge.

        Hand-offs to worker threads are grouped: a query whose vector is cached is one (plan,
        rank, charge: `_rank_then_charge`); one the model embeds is three (plan and count;
        the model's call; rank and charge). On SQLite the first and the last run on the event
        loop itself when nothing in them would wait there (`kit/loop_units.py`) and the request
        is small (`kit/light.py`: its filters and record): they leave it for a worker, from
        their start, to load a template's index, columns or extractor, to compute a filter's
        rows not met before, to call a model (a word the extractor has not met), or for a
        template large enough for the ANN index. Credits are held while the model runs only when
        it runs elsewhere (a paid API): a model in this process costs this server nothing but
        CPU, so the balance is checked before it runs and the charge after ranking is
        conditional, as for a cached vector."""
        term = checked_term(query)
        limit = max(1, min(query.limit, MAX_LIMIT))
        owner = Owner.of(caller)
        # On the loop on SQLite only: on PostgreSQL a search's SQL (an index scan, an exact scan of
        # the filtered rows) can take far longer than a turn's (`kit/pg_loop_units.py`).
        light = is_light([query.params, query.forced, query.record]) and self.db.dialect == "sqlite"
        plan, found, reservation = await self.db.in_worker(  # it may call the models
            lambda: self._begin(caller, owner, query, term, limit),
            waits_elsewhere=True,
            loop_ok=light,
        )
        if found is not None:
            return found
        if reservation is None:  # embedded in this process: checked, nothing held
            vector, tokens = await self._embed_query(caller, plan)
            return await self.db.in_worker(
                lambda: self._rank_then_charge(
                    plan, owner, vector, tokens, limit, query, checked=True
                ),
                loop_ok=light,
            )
        meter = Meter(self.db, reservation)  # kept alive from here (on the event loop)
        try:
            vector, tokens = await self._embed_query(caller, plan)
        except BaseException:
            await meter.release()
            raise
        return await self.db.in_worker(
            lambda: self._finish(plan, vector, tokens, limit, query, meter)
        )

    async def _embed_query(self, caller: Principal, plan: Plan) -> tuple[np.ndarray, int]:
        """The query's vector and the tokens it is billed for, remembered for next time."""
        embedder = self.providers.embedder()
        batch = await embedder.embed([plan.text], Owner.of(caller).party)
        vector = np.asarray(batch.vectors, dtype=np.float32)[0]
        self.query_vectors.put(
            cache_scope(caller.account_id, embedder.name), plan.text, vector, batch.input_tokens
        )
        return vector, batch.input_tokens

    def _begin(
        self, caller: Principal, owner: Owner, query: SearchQuery, term: str | None, limit: int
    ) -> tuple[Plan, Found | None, Reservation | None]:
        """On a worker thread: the plan, then the money. A cached vector is billed at the
        tokens the model counted the first time (as if it ran) and the search finishes here.
        Otherwise the model's own count is priced: a model in this process gets a balance
        check (402 before it runs; no reservation is returned), one elsewhere a hold (wrapped
        in a `Meter` on the event loop: one whose search was cancelled meanwhile expires)."""
        plan = self._plan(caller, owner, query, term)
        embedder = self.providers.embedder()
        known = self.query_vectors.get(cache_scope(caller.account_id, embedder.name), plan.text)
        if known is None:
            price = self.pricing.embedding(count_from_worker(embedder, [plan.text]))
            if embeds_in_process(embedder):
                with self.db.point_reads() as session:
                    Meter.ensure_covered(session, owner, price)
                return plan, None, None
            return plan, None, Meter.hold(self.db, owner, price, query.route)
        vector, tokens = known
        return plan, self._rank_then_charge(plan, owner, vector, tokens, limit, query), None

    def _rank_then_charge(
        self,
        plan: Plan,
        owner: Owner,
        vector: np.ndarray,
        tokens: int,
        limit: int,
        query: SearchQuery,
        *,
        checked: bool = False,
    ) -> Found:
        """Nothing is held: 402 before ranking when the balance cannot cover the price (unless
        the caller has just `checked` it), then one conditional charge, 402 if concurrent
        spending took the credits meanwhile (the hits are then never shown). One write
        transaction where a hold and a settle took two."""
        template = plan.template
        price = self.pricing.embedding(tokens)
        with self.db.session(write=False) as session:  # pgvector's SET LOCAL needs one
            if not checked:
                Meter.ensure_covered(session, owner, price)
            hits, path = self._retrieve(session, plan, vector, limit, query)
        with self.db.session() as session:
            settlement = Meter.charge_in(
                session,
                owner,
                price,
                route=query.route,
                model=template.embedding_model,
                usage={"input_tokens": tokens},
                subject_id=template.id,
            )
        return Found(template, plan.filters, hits, settlement, plan.semantic, plan.sources, path)

    def _retrieve(
        self, session: Session, plan: Plan, vector: np.ndarray, limit: int, query: SearchQuery
    ) -> Retrieved:
        store, cutoff, ann = SearchStore(session), self.exact_limit, self.ann
        return retrieve_planned(
            store, plan, vector, query, limit=limit, exact_limit=cutoff, ann=ann
        )

    def _finish(
        self,
        plan: Plan,
        vector: np.ndarray,
        tokens: int,
        limit: int,
        query: SearchQuery,
        meter: Meter,
    ) -> Found:
        """Rank in a read transaction, then settle in a short write one, on a worker thread
        (the write lock is not held while scoring); any failure releases the hold."""
        template = plan.template
        try:
            with self.db.session(write=False) as session:  # pgvector's SET LOCAL needs one
                hits, path = self._retrieve(session, plan, vector, limit, query)
            with self.db.session() as session:
                settlement = meter.settle_in(
                    session,
                    self.pricing.embedding(tokens),
                    model=template.embedding_model,
                    usage={"input_tokens": tokens},
                    subject_id=template.id,
                )
        except BaseException:
            meter.release_now()
            raise
        return Found(template, plan.filters, hits, settlement, plan.semantic, plan.sources, path)

    # Reading

    def list(
        self, caller: Principal, limit: int, offset: int
    ) -> tuple[list[EmbeddingTemplate], int]:
        with self.db.session(write=False) as session:
            return SearchStore(session).templates_of(
                caller.account_id, caller.external_user_id, limit, offset
            )

    def status(self, caller: Principal, template_id: Any) -> EmbeddingTemplate:
        with self.db.session(write=False) as session:
            return self.owned(SearchStore(session), caller, template_id, detached=True)
