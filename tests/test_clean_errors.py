"""Text a database cannot store, numbers past its range, browsers and metrics: clean answers.

Every case runs on SQLite and on PostgreSQL, which refuses NUL characters in text and JSON: a
request carrying one must get a 400 naming the field, with nothing stored or charged.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from sessionary.app import create_app
from sessionary.billing.ledger import Ledger, Owner
from sessionary.config import Settings
from sessionary.kit import text_rule
from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.support.live import server_env
from tests.test_credits_http import grant

NUL = "a\u0000b"
LONE = "\ud800x"

# (method, path, body or query, the field the 400 must name)
CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/v1/assistant/session", {"session_name": NUL}, "session_name"),
    ("POST", "/v1/responses", {"input": NUL}, "input"),
    ("POST", "/v1/responses", {"input": [{"role": "user", "content": LONE}]}, "input[0].content"),
    ("POST", "/v1/assistant/set_system_prompt", {"system_prompt": NUL}, "system_prompt"),
    ("POST", "/v1/chatkit/sessions", {"user": NUL, "workflow": {"id": "default"}}, "user"),
    (
        "POST",
        "/v1/external_users/session",
        {"external_user": {"provider": "app", "unique_key": NUL}},
        "external_user.unique_key",
    ),
    (
        "POST",
        "/v1/chat/create_embedding",
        {"name": "t", "records": [{"id": "1", "title": NUL}]},
        "records[0].title",
    ),
    (
        "POST",
        "/v1/chat/create_embedding",
        {"name": "t", "records": [{"id": "1", NUL: 1}]},
        "records[0]",
    ),
    ("POST", "/v1/threads", {"metadata": {"k": NUL}}, "metadata.k"),
    ("GET", "/v1/chat/embedding_templates", {"after": NUL}, "after"),
    ("GET", "/v1/threads", {"after": NUL}, "after"),
]


def balance(db: Database, tenant: Tenant) -> int:
    with db.session(write=False) as session:
        return Ledger(session).balance(Owner.account(tenant.account_id))


@pytest.mark.parametrize(("method", "path", "payload", "param"), CASES)
def test_text_a_database_cannot_store_is_a_400_naming_the_field(
    client: TestClient,
    db: Database,
    tenant: Tenant,
    method: str,
    path: str,
    payload: dict[str, Any],
    param: str,
) -> None:
    grant(db, tenant, 10_000_000)
    if method == "GET":
        answer = client.get(path, params=payload, headers=tenant.headers)
    else:
        # json.dumps escapes NUL and lone surrogates as \u0000 / \ud800, as JSON clients do.
        headers = {**tenant.headers, "Content-Type": "application/json"}
        answer = client.post(path, content=json.dumps(payload), headers=headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_text"
    assert error["param"] == param
    assert balance(db, tenant) == 10_000_000


def test_text_that_only_looks_dangerous_passes(client: TestClient, tenant: Tenant) -> None:
    # An emoji escaped as a surrogate pair, and a literal backslash-u0000 (six characters).
    raw = b'{"session_name": "\\ud83d\\ude00 and \\\\u0000"}'
    made = client.post(
        "/v1/assistant/session",
        content=raw,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert made.status_code == 200, made.text
    assert made.json()["session_name"] == "\U0001f600 and \\u0000"


def test_numbers_past_any_integer_column_are_400(client: TestClient, tenant: Tenant) -> None:
    for params in ({"offset": 2**63}, {"limit": 2**63}, {"offset": -1}):
        answer = client.get("/v1/chat/embedding_templates", params=params, headers=tenant.headers)
        assert answer.status_code == 400, (params, answer.text)


def test_a_field_that_changes_type_never_makes_a_range_filter_fail(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 100_000_000)
    records = [{"id": str(i), "title": f"home {i}", "pool": i % 2 == 0} for i in range(6)]
    made = client.post(
        "/v1/chat/create_embedding", json={"name": "t", "records": records}, headers=tenant.headers
    )
    assert made.status_code == 200, made.text
    template = made.json()["template_id"]
    numbers = [{"id": str(i + 10), "title": f"flat {i}", "pool": i * 3} for i in range(6)]
    updated = client.post(
        "/v1/chat/update_embedding",
        json={"template_id": template, "records": numbers},
        headers=tenant.headers,
    )
    assert updated.status_code in (200, 400), updated.text
    found = client.post(
        "/v1/chat/search_against_embedding",
        json={
            "template_id": template,
            "search_term": "home",
            "search_params": {"pool": {"min": 3}},
        },
        headers=tenant.headers,
    )
    assert found.status_code in (200, 400), found.text


def test_cors_preflight_is_answered_for_configured_origins_only(
    settings: Settings, db: Database
) -> None:
    from sessionary.config import CorsSettings

    configured = settings.model_copy(update={"cors": CorsSettings(origins=["https://app.example"])})
    with TestClient(create_app(configured)) as client:
        preflight = {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        }
        allowed = client.options("/v1/responses", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in allowed.headers
        other = client.options(
            "/v1/responses", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        answer = client.get("/healthz", headers={"Origin": "https://app.example"})
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
    with pytest.raises(ValueError, match="origin"):
        CorsSettings(origins=["app.example"])


def test_metrics_need_loopback_or_the_token(settings: Settings, db: Database) -> None:
    with TestClient(create_app(settings), client=("203.0.113.9", 5000)) as remote:
        assert remote.get("/metrics").status_code == 403
    with TestClient(create_app(settings), client=("127.0.0.1", 5000)) as local:
        assert local.get("/metrics").status_code == 200
    guarded = settings.model_copy(update={"metrics_token": SecretStr("s3cret-metrics")})
    with TestClient(create_app(guarded), client=("127.0.0.1", 5000)) as local:
        assert local.get("/metrics").status_code == 401
        ok = local.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
        assert ok.status_code == 200
        assert "sessionary_http_requests_total" in ok.text


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["credits", "grant", "acct_missing", "--", "inf"], {}, "not an amount of credits"),
        (["credits", "grant", "acct_missing", "1e18"], {}, "not an amount of credits"),
        (["accounts", "list"], {"SESSIONARY_DB_POOL_SIZE": "0"}, "invalid setting 'db_pool_size'"),
        (["tokens", "revoke", "acct_missing", "tok_missing"], {}, "No auth token"),
        (["migrate"], {"SESSIONARY_DATABASE_URL": "foo://x"}, "database:"),
        (["init"], {"SESSIONARY_DATA_DIR": "/proc/no-such-dir"}, "No such file or directory"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    """On the embedded database (the CLI's errors do not depend on the engine)."""
    base = {"SESSIONARY_DATA_DIR": str(tmp_path / "data"), "SESSIONARY_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-m", "sessionary", *args],
        env=server_env({**base, **env}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert says in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1


def test_json_in_utf16_or_utf32_is_refused_so_nothing_hides_from_the_text_rule(
    client: TestClient, tenant: Tenant
) -> None:
    body = json.dumps({"session_name": NUL})
    for encoding in ("utf-16", "utf-16-le", "utf-32-be"):
        answer = client.post(
            "/v1/assistant/session",
            content=body.encode(encoding),
            headers={**tenant.headers, "Content-Type": "application/json"},
        )
        assert answer.status_code == 400, (encoding, answer.text)
        assert answer.json()["error"]["code"] == "invalid_encoding"


def test_a_nul_nested_past_any_depth_is_a_400(client: TestClient, tenant: Tenant) -> None:
    deep = '{"metadata": ' + "[" * 3000 + '"\\u0000"' + "]" * 3000 + "}"
    answer = client.post(
        "/v1/threads", content=deep, headers={**tenant.headers, "Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize(
    ("number", "where"),
    [
        ("NaN", "tools[0].parameters.properties.x.maximum"),
        ("Infinity", "tools[0].parameters.properties.x.maximum"),
        ("-Infinity", "text.format.schema.minimum"),
        ("1e400", "tools[0].parameters.properties.x.maximum"),
        ("-2.5E+999", "text.format.schema.minimum"),
        ("1" + "0" * 400 + ".0", "tools[0].parameters.properties.x.maximum"),  # no exponent
        ("-1" + "0" * 300 + "e10", "text.format.schema.minimum"),
    ],
)
def test_a_number_json_does_not_have_is_a_400_naming_it_and_nothing_is_charged(
    client: TestClient, db: Database, tenant: Tenant, number: str, where: str
) -> None:
    """Python's parser takes NaN and Infinity and reads 1e400 as infinity; carried on, a tool's
    schema reached the model's server holding the bare word `Infinity`."""
    grant(db, tenant, 10_000_000)
    tool = '{"type": "function", "name": "f", "parameters": {"type": "object", "properties": '
    value = number if where.startswith("tools") else "1"
    minimum = number if where.startswith("text") else "0"
    body = (
        f'{{"input": "hi", "tools": [{tool}{{"x": {{"type": "number", "maximum": {value}}}}}}}}}],'
        f' "text": {{"format": {{"type": "json_schema", "name": "n", "schema": '
        f'{{"type": "number", "minimum": {minimum}}}}}}}}}'
    )
    answer = client.post(
        "/v1/responses",
        content=body,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_number", where)
    assert balance(db, tenant) == 10_000_000


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded+json",
        "Application/Vnd.Sessionary+JSON; charset=utf-8",
        "multipart/form-data+json",
    ],
)
def test_a_json_body_under_another_type_name_meets_the_rule(
    client: TestClient, db: Database, tenant: Tenant, content_type: str
) -> None:
    """FastAPI reads any `application/*+json` body as JSON: the rule skips the two form types
    only, not every type that starts like one (a lone surrogate there was a 500)."""
    grant(db, tenant, 10_000_000)
    headers = {**tenant.headers, "Content-Type": content_type}
    bodies = {
        '{"input": "hi", "text": {"format": {"type": "json_schema", "name": "n", '
        '"schema": {"type": "number", "maximum": NaN}}}}': "invalid_number",
        '{"input": "a\\u0000b"}': "invalid_text",
        '{"input": "a\\ud800b"}': "invalid_text",
    }
    for body, code in bodies.items():
        answer = client.post("/v1/responses", content=body, headers=headers)
        if content_type.startswith("multipart/"):  # not JSON to FastAPI either: no model runs
            assert answer.status_code in (400, 415, 422), answer.text
            continue
        assert answer.status_code == 400, (content_type, body, answer.text)
        assert answer.json()["error"]["code"] == code
    assert balance(db, tenant) == 10_000_000


def test_a_large_body_is_named_off_the_event_loop(
    client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naming the field of one bad number among millions takes seconds of Python: past
    `INLINE_BYTES` it runs on a worker thread, and the answer is the same."""
    seen: list[bool] = []
    problem = text_rule._body_problem

    def on_the_loop_or_not(body: bytes) -> Any:
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:
            seen.append(False)
        return problem(body)

    monkeypatch.setattr(text_rule, "_body_problem", on_the_loop_or_not)
    headers = {**tenant.headers, "Content-Type": "application/json"}
    for size, on_loop in ((10, True), (text_rule.INLINE_BYTES // 4 + 1, False)):
        numbers = ", ".join(["0.25"] * size)
        body = f'{{"session_name": "s", "metadata": {{"n": [{numbers}, 1e400]}}}}'
        answer = client.post("/v1/assistant/session", content=body, headers=headers)
        assert answer.status_code == 400, answer.text[:200]
        assert answer.json()["error"]["param"] == f"metadata.n[{size}]"
        assert seen[-1] is on_loop


def test_words_and_large_exponents_that_are_json_pass_the_number_rule(
    client: TestClient, tenant: Tenant
) -> None:
    """The byte scan's suspects that are JSON after all: the words in a string, a number whose
    three-digit exponent stays in range."""
    headers = {**tenant.headers, "Content-Type": "application/json"}
    name = "NaN, Infinity and 1e400"
    answer = client.post(
        "/v1/assistant/session", content=f'{{"session_name": "{name}"}}', headers=headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["session_name"] == name
    in_range = '{"price": {"min": 1e-300, "max": -1.5E+300}}'
    body = f'{{"template_id": "{"0" * 26}", "search_term": "NaN", "search_params": {in_range}}}'
    answer = client.post("/v1/chat/search_against_embedding", content=body, headers=headers)
    assert answer.status_code == 404, answer.text  # past the rule: no such template
    # nested past any depth a parser takes, with a suspect in a string: the route's answer
    deep = '{"session_name": "3e100f", "metadata": ' + "[" * 3000 + "1" + "]" * 3000 + "}"
    answer = client.post("/v1/assistant/session", content=deep, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] != "invalid_number"


def test_a_field_bomb_is_refused_before_any_work(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    """4,000 keys a record once made 40,000 fields, 16 s queries and a 4.7 MB listing."""
    grant(db, tenant, 10_000_000)
    bomb = [{"id": str(r), **{f"k{r}_{i}": i for i in range(4000)}} for r in range(3)]
    answer = client.post(
        "/v1/chat/create_embedding", json={"name": "bomb", "records": bomb}, headers=tenant.headers
    )
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["error"]["code"] == "too_many_fields"
    long_name = [{"id": "1", "x" * 300: 1}]
    answer = client.post(
        "/v1/chat/create_embedding", json={"records": long_name}, headers=tenant.headers
    )
    assert answer.status_code == 400
    assert balance(db, tenant) == 10_000_000
    listed = client.get("/v1/chat/embedding_templates", headers=tenant.headers).json()
    assert listed["templates"] == []  # nothing was stored


def test_filters_with_numbers_no_column_holds_or_huge_lists_are_400(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 10_000_000)
    records = [
        {"id": str(i), "title": f"home {i}", "price": 100 * i, "city": "Oslo"} for i in range(6)
    ]
    made = client.post(
        "/v1/chat/create_embedding", json={"records": records}, headers=tenant.headers
    )
    template = made.json()["template_id"]
    spent = balance(db, tenant)
    headers = {**tenant.headers, "Content-Type": "application/json"}
    for raw in (
        '{"min": NaN}',
        '{"min": Infinity}',
        '{"max": 1e400}',
        '{"in": [' + ",".join(["1"] * 1001) + "]}",
    ):
        body = f'{{"template_id": "{template}", "search_term": "home", "search_params": {{"price": {raw}}}}}'
        answer = client.post("/v1/chat/search_against_embedding", content=body, headers=headers)
        assert answer.status_code == 400, (raw[:30], answer.text[:200])
    assert balance(db, tenant) == spent
