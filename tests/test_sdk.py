"""The Python SDK against a real server process: every method, errors, retries, streaming."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest

from sessionary.client import (
    APIConnectionError,
    AsyncSessionary,
    AuthenticationError,
    BadRequestError,
    ExternalUser,
    InsufficientCreditsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    Sessionary,
)
from tests.support.flaky_proxy import FlakyProxy
from tests.support.live import LiveServer, free_port, initialised_server

pytestmark = pytest.mark.slow

RECORDS = [
    {"id": "1", "title": "Red running shoes", "price": 120, "colour": "red"},
    {"id": "2", "title": "Blue rain jacket", "price": 80, "colour": "blue"},
    # Colours repeat: a field is a category (and a filter) only when its values recur.
    {"id": "3", "title": "Blue trail shoes", "price": 140, "colour": "blue"},
]
USER = ExternalUser(provider="shop", unique_key="u-1", username="ann")


@dataclass
class Running:
    server: LiveServer
    key: str

    @property
    def v1(self) -> str:
        return f"{self.server.base_url}/v1"

    def client(self, **options: object) -> Sessionary:
        return Sessionary(api_key=self.key, base_url=self.v1, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("sdk") / "data"
    with initialised_server(data, SESSIONARY_DEFAULT_MAX_OUTPUT_TOKENS="12") as (server, key):
        yield Running(server, key)


def test_assistant_and_credit_methods(running: Running) -> None:
    with running.client() as client:
        before = client.get_credits_balance().data.remaining_credits
        prompt = client.set_assistant_system_prompt("You are terse.")
        assert prompt.data.system_prompt == "You are terse."
        session = client.create_assistant_session(session_name="sdk", metadata={"k": "v"})
        assert session.data.session_name == "sdk" and session.data.metadata == {"k": "v"}
        turn = client.create_assistant_completion(session.data.session_id, "Hello!")
        assert turn.status == 200 and turn.data.output_text
        assert turn.credits_charged is not None and turn.credits_charged > 0
        assert turn.credits_remaining == before - turn.credits_charged
        follow = client.create_assistant_completion(
            session.data.session_id, "Again.", max_output_tokens=4
        )
        assert follow.data.previous_response_id == turn.data.id
        enhanced = client.enhance_message("we sell good shoes", language="en", maxwords=8)
        assert enhanced.data.content and enhanced.credits_charged == Decimal(20)
        sessions = client.list_sessions(limit=5).data
        assert sessions.data[0].id == session.data.session_id
        transcript = client.list_session_messages(session.data.session_id).data
        assert [m.role for m in transcript.data] == ["user", "assistant"] * 2
        assert transcript.data[0].text == "Hello!"
        cleared = client.set_assistant_system_prompt(None)
        assert cleared.data.system_prompt is None
        token = client.create_login_token().data
        verified = client.verify_client_session(login_token=token.login_token).data
        assert verified.is_external_user is False and verified.auth_token
        with Sessionary(auth_token=verified.auth_token, base_url=running.v1) as as_token:
            assert as_token.verify_client_session().data.id == verified.id
            assert as_token.get_credits_balance().data.remaining_credits > 0


def test_template_methods(running: Running) -> None:
    with running.client() as client:
        made = client.create_embedding(RECORDS, name="catalogue")
        template_id = made.data.template_id
        assert made.data.record_count == 3 and made.credits_charged
        updated = client.update_embedding(template_id, [{"id": "4", "title": "Yellow boots"}])
        assert updated.data.record_count == 4
        found = client.search_against_embedding(template_id, "red shoes", limit=2).data
        assert found.results[0].id == "1" and found.structured_filters == {"colour": "red"}
        similar = client.similar_to_embedding(template_id, "trail running", limit=2).data
        assert len(similar.matches) == 2
        status = client.get_embedding_status(template_id).data
        assert status.has_embeddings and status.record_count == 4
        listed = client.list_embedding_templates(limit=10).data
        assert template_id in [t["template_id"] for t in listed.templates]
        assert client.delete_embedding(template_id, ["4"]).data.record_count == 3
        text = client.generate_embeddings_from_plain_text(["A short note."], name="notes")
        assert text.data.record_count == 1
        assert client.delete_embeddings(template_id).data.record_count == 0
        vectors = client.create_embeddings(["one", "two"]).data
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384


def test_external_user_methods(running: Running) -> None:
    with running.client() as client:
        made = client.create_external_user_session(USER).data
        assert made.external_api_key and made.external_user
        granted = client.grant_external_user_credits(USER, 60).data
        assert granted.remaining_credits == 60
        assert client.get_external_credits_balance(USER).data.remaining_credits == 60
        prompt = client.set_external_assistant_system_prompt("Be kind.", external_user=USER)
        assert prompt.data.system_prompt == "Be kind."
        session = client.create_external_assistant_session(USER, session_name="mine").data
        turn = client.create_external_assistant_completion(
            session.session_id, "Hi", external_user=USER, max_output_tokens=4
        )
        assert turn.data.output_text and turn.credits_charged
        notes = client.generate_external_embeddings_from_plain_text(
            ["Notes of the user."], external_user=USER
        )
        assert notes.data.external_user and notes.data.external_user.id == made.external_user.id
        raw = client.create_external_embeddings("hello", external_user=USER).data
        assert raw.dimensions == 384
        charge = client.charge_external_user_utility_usage(
            "tts", external_user=USER, characters=1000
        ).data
        assert charge.credits_charged == Decimal(30)  # 1,000 characters at $0.30
        library = client.list_external_user_requests(USER, limit=10).data
        newest = library.requests[0]
        assert newest.route_key == "/v1/external_users/utils/usage_charge"
        first = library.requests[-1].request_id
        published = client.publish_external_user_request(first, title="T", external_user=USER)
        assert published.data.request.is_published
        archived = client.archive_external_user_request(first, external_user=USER)
        assert archived.data.request.is_archived
        login = client.create_external_user_login_token(USER, redirect="/studio").data
        verified = client.verify_client_session(login_token=login.login_token).data
        assert verified.is_external_user and verified.unique_key == "u-1"
    with Sessionary(external_user_api_key=made.external_api_key, base_url=running.v1) as user:
        own = user.get_credits_balance().data.remaining_credits
        summary = user.get_external_credits_balance().data.external_user
        assert summary is not None and summary.total_credits_used
        assert own == summary.generation_credits == 60 - summary.total_credits_used
        assert own < 60 - charge.credits_charged  # the turn and the embeddings were paid too


def test_errors_are_typed_with_the_envelope(running: Running) -> None:
    bad = Sessionary(api_key="sk_sy_nope", base_url=running.v1, max_retries=0)
    with bad, pytest.raises(AuthenticationError) as refused:
        bad.get_credits_balance()
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    with running.client(max_retries=0) as client:
        with pytest.raises(NotFoundError) as missing:
            client.create_assistant_completion("sess_01ZZZZZZZZZZZZZZZZZZZZZZZZ", "x")
        assert "No session" in missing.value.message and missing.value.request_id
        with pytest.raises(BadRequestError) as invalid:
            client.list_embedding_templates(limit=1000)
        assert invalid.value.param == "limit"
        poor = client.create_external_user_session(ExternalUser(provider="shop", unique_key="poor"))
        poor_key = poor.data.external_api_key
        with pytest.raises(NotFoundError):
            client.get_external_credits_balance(ExternalUser(provider="shop", unique_key="zzz"))
    with Sessionary(api_key=poor_key, base_url=running.v1, max_retries=0) as user:
        with pytest.raises(PermissionDeniedError) as forbidden:
            user.set_assistant_system_prompt("mine")
        assert forbidden.value.code == "account_only"
        with pytest.raises(PermissionDeniedError):
            user.get_external_credits_balance(USER)  # another user of the account
        with pytest.raises(InsufficientCreditsError) as short:
            user.enhance_message("hello")
        assert short.value.credits_remaining == 0
    secret = httpx.post(
        f"{running.v1}/chatkit/sessions",
        json={
            "user": "u",
            "workflow": {"id": "default"},
            "rate_limits": {"max_requests_per_1_minute": 1},
        },
        headers={"Authorization": f"Bearer {running.key}"},
    ).json()["client_secret"]
    with Sessionary(api_key=secret, base_url=running.v1, max_retries=0) as limited:
        with pytest.raises(PermissionDeniedError):
            limited.list_sessions()
        with pytest.raises(RateLimitError) as limit:
            limited.list_sessions()
        assert int(limit.value.headers["retry-after"]) >= 1


def test_retries_keep_one_idempotency_key_and_charge_once(running: Running) -> None:
    proxy = FlakyProxy(running.server.base_url, ["lose", "refuse"])
    try:
        with Sessionary(api_key=running.key, base_url=f"{proxy.base_url}/v1") as client:
            before = client.get_credits_balance().data.remaining_credits
            proxy.faults = ["lose", "refuse"]
            enhanced = client.enhance_message("we sell good shoes")
            after = client.get_credits_balance().data.remaining_credits
    finally:
        proxy.stop()
    posts = [key for path, key in proxy.seen if path.endswith("/chat/enhance")]
    assert len(posts) == 3 and len(set(posts)) == 1 and posts[0]
    assert enhanced.headers.get("idempotent-replayed") == "true"
    assert before - after == Decimal(20)  # one charge for three attempts
    with (
        Sessionary(
            api_key=running.key, base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1
        ) as gone,
        pytest.raises(APIConnectionError),
    ):
        gone.get_credits_balance()


def test_streaming_sync_and_async(running: Running) -> None:
    with running.client() as client:
        session_id = client.create_assistant_session().data.session_id
        with client.create_assistant_completion(
            session_id, "Tell me a story.", stream=True
        ) as stream:
            events = list(stream)
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created"
        assert kinds[-1] in ("response.completed", "response.incomplete")  # 12 tokens at most
        text = "".join(e.delta or "" for e in events if e.type == "response.output_text.delta")
        final = client.create_assistant_completion(
            session_id, "More.", stream=True
        ).final_response()
        first = events[-1].response
        assert text and first is not None and first.output_text == text
        assert final.output_text and final.previous_response_id == first.id

    async def run() -> tuple[str, str]:
        async with AsyncSessionary(api_key=running.key, base_url=running.v1) as client:
            session = await client.create_assistant_session()
            stream = await client.create_assistant_completion(
                session.data.session_id, "Hello there.", stream=True
            )
            deltas = [d async for d in stream.text_deltas()]
            again = await client.create_assistant_completion(
                session.data.session_id, "And?", stream=True
            )
            final = await again.final_response()
            plain = await client.create_assistant_completion(session.data.session_id, "Bye.")
            assert plain.data.previous_response_id == final.id
            credits = await client.get_credits_balance()
            assert credits.data.remaining_credits > 0
            return "".join(deltas), final.output_text

    streamed, final_text = asyncio.run(run())
    assert streamed and final_text


def test_the_sdk_imports_nothing_from_the_server() -> None:
    probe = (
        "import sys, sessionary.client; "
        "print(sorted(m for m in sys.modules if m.startswith(('sessionary.', 'fastapi', "
        "'sqlalchemy', 'torch')) and not m.startswith('sessionary.client')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
