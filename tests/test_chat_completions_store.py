"""Stored chat completions through the official openai SDK, on both engines: what `store: true`
keeps is retrieved, listed (cursor, order, model and metadata filters), relabelled and deleted as
`client.chat.completions` calls it, and only by its owner (anyone else: 404)."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant
from tests.test_credits_http import grant
from tests.test_external_users import ALICE, new_user

pytestmark = pytest.mark.slow

FUNDS = 100_000_000
MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello."}]


def sdk_for(client: TestClient, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=api_key, http_client=client, max_retries=0
    )


@pytest.fixture
def sdk(client: TestClient, db: Database, tenant: Tenant) -> openai.OpenAI:
    grant(db, tenant, FUNDS)
    return sdk_for(client, tenant.api_key)


def stored(sdk: openai.OpenAI, **extra: Any) -> Any:
    return sdk.chat.completions.create(
        model=MODEL, messages=extra.pop("messages", HELLO), max_tokens=3, store=True, **extra
    )


def test_a_stored_completion_is_retrieved_as_answered_with_its_messages(
    sdk: openai.OpenAI,
) -> None:
    asked = [{"role": "system", "content": "Be brief."}, *HELLO]
    made = stored(sdk, messages=asked, metadata={"topic": "greeting"})
    got = sdk.chat.completions.retrieve(made.id)
    assert got.id == made.id and got.object == "chat.completion"
    assert got.choices[0].message.content == made.choices[0].message.content
    assert got.usage == made.usage and got.model == made.model
    assert got.metadata == made.metadata == {"topic": "greeting"}  # the create answer's too
    messages = sdk.chat.completions.messages.list(made.id).data
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "Say hello."),
    ]
    assert all(m.id and m.content_parts is None for m in messages)
    newest_first = sdk.chat.completions.messages.list(made.id, order="desc", limit=1)
    assert [m.content for m in newest_first.data] == ["Say hello."] and newest_first.has_more


@pytest.mark.parametrize("metadata", [{"topic": "greeting"}, None], ids=["labelled", "bare"])
def test_the_create_answer_is_what_a_get_answers(
    client: TestClient, sdk: openai.OpenAI, tenant: Tenant, metadata: dict[str, str] | None
) -> None:
    """The stored completion's create answer, metadata included ({} when none was given), is
    the object a GET of it answers, field for field."""
    body: dict[str, Any] = {"model": MODEL, "messages": HELLO, "max_tokens": 3, "store": True}
    if metadata is not None:
        body["metadata"] = metadata
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    made = client.post("/v1/chat/completions", json=body, headers=headers)
    assert made.status_code == 200, made.text
    assert made.json()["metadata"] == (metadata or {})
    got = client.get(f"/v1/chat/completions/{made.json()['id']}", headers=headers)
    assert got.json() == made.json()


def test_tool_calls_and_outputs_come_back_in_the_chat_shape(sdk: openai.OpenAI) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    asked = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    made = stored(sdk, messages=asked)
    user, assistant, tool = sdk.chat.completions.messages.list(made.id).data
    assert user.content == "Say hello."
    assert assistant.content is None and assistant.tool_calls is not None
    assert assistant.tool_calls[0].model_dump() == call
    assert tool.content == "sunny" and (tool.model_extra or {})["tool_call_id"] == "call_1"


def test_list_pages_and_filters_by_model_and_metadata(sdk: openai.OpenAI) -> None:
    first = stored(sdk, metadata={"team": "red", "run": "1"})
    second = stored(sdk, metadata={"team": "blue"})
    third = stored(sdk, metadata={"team": "red", "run": "2"})
    sdk.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)  # not stored
    every = [c.id for c in sdk.chat.completions.list(limit=1)]  # the SDK follows `after`
    assert every == [first.id, second.id, third.id]  # oldest first by default
    assert [c.id for c in sdk.chat.completions.list(order="desc")] == every[::-1]
    red = sdk.chat.completions.list(metadata={"team": "red"})
    assert [c.id for c in red] == [first.id, third.id]
    both = sdk.chat.completions.list(metadata={"team": "red", "run": "2"})
    assert [c.id for c in both] == [third.id]
    assert [c.id for c in sdk.chat.completions.list(model=MODEL)] == every
    assert list(sdk.chat.completions.list(model="other")) == []


def test_update_replaces_the_metadata_the_filter_reads(sdk: openai.OpenAI) -> None:
    made = stored(sdk, metadata={"team": "red"})
    updated = sdk.chat.completions.update(made.id, metadata={"team": "blue", "done": "yes"})
    assert updated.metadata == {"team": "blue", "done": "yes"}
    assert list(sdk.chat.completions.list(metadata={"team": "red"})) == []
    assert [c.id for c in sdk.chat.completions.list(metadata={"done": "yes"})] == [made.id]
    cleared = sdk.chat.completions.update(made.id, metadata=None)
    assert cleared.metadata == {}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.update(made.id, metadata={"n": 1})  # type: ignore[dict-item]
    assert caught.value.param == "metadata.n"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.list(metadata={f"k{i}": "v" for i in range(17)})


def test_delete_removes_the_completion_and_its_conversation(sdk: openai.OpenAI) -> None:
    made = stored(sdk)
    session_id = (made.model_extra or {})["session_id"]
    deleted = sdk.chat.completions.delete(made.id)
    assert deleted.id == made.id and deleted.deleted and deleted.object == "chat.completion.deleted"
    for call in (sdk.chat.completions.retrieve, sdk.chat.completions.delete):
        with pytest.raises(openai.NotFoundError):
            call(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.retrieve(session_id)
    assert list(sdk.chat.completions.list()) == []


def test_deleting_its_thread_deletes_the_completion(sdk: openai.OpenAI) -> None:
    made = stored(sdk)
    sdk.beta.threads.delete((made.model_extra or {})["session_id"])
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.retrieve(made.id)


def test_only_stored_completions_of_the_caller_are_found(
    client: TestClient, db: Database, sdk: openai.OpenAI, tenant: Tenant
) -> None:
    unstored = sdk.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.retrieve(unstored.id)
    mine = stored(sdk)
    other = make_tenant(db, "other")
    grant(db, other, FUNDS)
    alice = sdk_for(client, new_user(client, tenant, ALICE, credits=50)["external_api_key"])
    strangers = (sdk_for(client, other.api_key), alice)
    for stranger in strangers:
        for call in (
            stranger.chat.completions.retrieve,
            stranger.chat.completions.messages.list,
            stranger.chat.completions.delete,
        ):
            with pytest.raises(openai.NotFoundError):
                call(mine.id)
        with pytest.raises(openai.NotFoundError):
            stranger.chat.completions.update(mine.id, metadata={"k": "v"})
        assert list(stranger.chat.completions.list()) == []
    hers = stored(alice)
    assert [c.id for c in alice.chat.completions.list()] == [hers.id]
    # The account reaches its user's completion by id; its own list holds its own only.
    assert sdk.chat.completions.retrieve(hers.id).id == hers.id
    assert [c.id for c in sdk.chat.completions.list()] == [mine.id]
    assert sdk.chat.completions.retrieve(mine.id).id == mine.id  # untouched by the strangers
