"""Concurrent upserts of the same records into one template, through 4 server processes:
no duplicate document, record_count exact, every request answered (never a 500)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from sessionary.kit.db import Database
from sessionary.search.models import EmbeddingTemplate, SearchDocument
from tests.conftest import Tenant
from tests.support.live import LiveServer
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

REQUESTS = 24


def records(offset: int) -> list[dict[str, str]]:
    """Overlapping windows of 12 ids out of 20: every id is written by several requests."""
    return [
        {"id": f"r{(offset + i) % 20}", "title": f"item {(offset + i) % 20}"} for i in range(12)
    ]


def test_concurrent_upserts_of_the_same_records(
    settings_env: dict[str, str], db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 100_000_000)
    server = LiveServer(settings_env, workers=4)
    try:
        made = httpx.post(
            f"{server.base_url}/v1/chat/create_embedding",
            json={"records": records(0)},
            headers=tenant.headers,
            timeout=120,
        )
        template_id = made.json()["template_id"]

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=f"{server.base_url}/v1", headers=tenant.headers, timeout=300
            ) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            "/chat/update_embedding",
                            json={"template_id": template_id, "records": records(n * 3)},
                        )
                        for n in range(REQUESTS)
                    )
                )

        answers = asyncio.run(fire())
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200] * REQUESTS, [a.text for a in answers][:3]
    with db.session(write=False) as session:
        template = session.get(EmbeddingTemplate, template_id)
        assert template is not None
        ids = list(
            session.scalars(
                select(SearchDocument.source_id).where(SearchDocument.template_id == template_id)
            )
        )
        assert sorted(ids) == sorted({f"r{i}" for i in range(20)})  # no duplicates, none lost
        assert template.record_count == 20
        assert session.scalar(select(func.count()).select_from(SearchDocument)) == 20
    assert max(a.json()["record_count"] for a in answers) == 20
