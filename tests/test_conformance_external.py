"""samsar-js's external-user surface (through node) and openai embeddings, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.support.live import LiveServer, initialised_server
from tests.support.samsar import samsar

pytestmark = pytest.mark.slow

USER = {
    "provider": "whop",
    "unique_key": "whop:usr_123",
    "external_user_id": "usr_123",
    "external_app_id": "app_abc",
    "username": "roy24x7",
}
OTHER = {"provider": "whop", "externalUserId": "usr_456", "displayName": "Ann"}


@dataclass
class Running:
    server: LiveServer
    key: str

    @property
    def v1(self) -> str:
        return f"{self.server.base_url}/v1"

    def calls(self, calls: list[tuple[str, list[Any]]], **client: Any) -> list[dict[str, Any]]:
        options = {"api_key": self.key, **client}
        return samsar(self.v1, options.pop("api_key"), calls, **options)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("external") / "data"
    with initialised_server(data, SESSIONARY_DEFAULT_MAX_OUTPUT_TOKENS="16") as (server, key):
        yield Running(server, key)


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["ok"], result
    data: dict[str, Any] = result["data"]
    return data


def test_readme_flow_from_session_to_an_auth_token_client(running: Running) -> None:
    session, granted, balance, prompt, assistant = running.calls(
        [
            ("createExternalUserSession", [USER]),
            ("grantExternalUserCredits", [USER, 100]),
            ("getExternalCreditsBalance", [USER]),
            (
                "setExternalAssistantSystemPrompt",
                [{"system_prompt": "You are the storefront assistant."}, USER],
            ),
            ("createExternalAssistantSession", [USER, {"session_name": "storefront"}]),
        ]
    )
    created = ok(session)
    assert created["external_api_key"].startswith("sk_eu_")
    assert created["remainingCredits"] == 0
    summary = created["external_user"]
    assert (summary["provider"], summary["unique_key"], summary["external_user_id"]) == (
        "whop",
        "whop:usr_123",
        "usr_123",
    )
    assert summary["has_external_api_key"] is True
    assert ok(granted)["creditsGranted"] == 100
    assert ok(granted)["remainingCredits"] == 100
    assert ok(granted)["internalRemainingCredits"] == 900  # moved from the account's 1000
    assert ok(balance)["remainingCredits"] == 100
    assert ok(balance)["external_user"]["total_credits_purchased"] == 100
    assert ok(prompt)["system_prompt"] == "You are the storefront assistant."
    session_id = ok(assistant)["session_id"]
    assert ok(assistant)["external_user"]["id"] == summary["id"]

    completion, template, vectors, usage, library = running.calls(
        [
            (
                "createExternalAssistantCompletion",
                [{"session_id": session_id, "input": "Write a caption.", "max_output_tokens": 12}, USER],
            ),
            (
                "generateExternalEmbeddingsFromPlainText",
                [
                    {
                        "name": "creator-docs-clean",
                        "plain_text": [
                            {
                                "url": "https://example.com/creator/faq",
                                "title": "Creator FAQ",
                                "content": "Cleaned plain text content for this external user.",
                            }
                        ],
                    },
                    USER,
                ],
            ),
            ("createExternalEmbeddings", [{"input": ["gallery text", "viewer query"]}]),
            ("chargeExternalUserUtilityUsage", [{"utility_type": "tts", "characters": 500}, USER]),
            ("listExternalUserRequests", [USER, {"limit": 12}]),
        ]
    )  # fmt: skip
    turn = ok(completion)
    assert turn["object"] == "response" and turn["output_text"]
    assert completion["creditsCharged"] > 0
    assert ok(template)["template_id"].startswith("tmpl_")
    assert ok(template)["external_user"]["id"] == summary["id"]
    raw = ok(vectors)
    assert [item["index"] for item in raw["data"]] == [0, 1]
    assert len(raw["data"][0]["embedding"]) == raw["dimensions"] == 384
    assert vectors["creditsCharged"] > 0  # billed to the account: no external user named
    assert ok(usage)["creditsCharged"] == 15  # 500 characters at $0.30 per 1,000
    assert ok(usage)["pricing"]["units"] == {"characters": 500.0}
    requests = ok(library)["requests"]
    assert [r["route_key"] for r in requests] == [
        "/v1/external_users/utils/usage_charge",
        "/v1/external_users/generate_embeddings_from_plain_text",
        "/v1/external_users/assistant/completion",
    ]
    assert requests[2]["upstream_request_id"] == turn["id"]
    assert requests[2]["upstream_session_id"] == session_id
    spent = sum(r["credits_charged"] for r in requests)
    assert ok(library)["external_user"]["total_credits_used"] == pytest.approx(spent)
    assert ok(library)["external_user"]["generation_credits"] == pytest.approx(100 - spent)

    turn_request = requests[2]["request_id"]
    published, archived, after, login = running.calls(
        [
            ("publishExternalUserRequest", [turn_request, {"title": "Caption"}, USER]),
            ("archiveExternalUserRequest", [requests[0]["request_id"], USER]),
            ("listExternalUserRequests", [USER]),
            ("createExternalUserLoginToken", [USER, {"redirect": "/external/studio"}]),
        ]
    )
    assert ok(published)["request"]["is_published"] is True
    assert ok(published)["publication"]["title"] == "Caption"
    assert ok(archived)["request"]["is_archived"] is True
    assert [r["request_id"] for r in ok(after)["requests"]] == [
        r["request_id"] for r in requests[1:]
    ]
    token = ok(login)
    assert token["loginToken"].startswith("lt_sy_")
    assert token["loginToken"] in token["loginUrl"] and token["expiresAt"]

    verified, reused = running.calls(
        [
            ("verifyClientSession", [{"loginToken": token["loginToken"]}]),
            ("verifyClientSession", [{"loginToken": token["loginToken"]}]),
        ]
    )
    identity = ok(verified)
    assert identity["isExternalUser"] is True
    assert (identity["uniqueKey"], identity["externalUserId"]) == ("whop:usr_123", "usr_123")
    assert identity["authToken"].startswith("at_sy_")
    assert (reused["ok"], reused["status"]) == (False, 401)  # single use

    own_prompt, own_library, own_credits, again, refused, grant = running.calls(
        [
            ("setExternalAssistantSystemPrompt", [{"system_prompt": "My launch assistant."}]),
            ("listExternalUserRequests", []),
            ("getCreditsBalance", []),
            ("verifyClientSession", []),
            ("createExternalUserSession", [OTHER]),
            ("grantExternalUserCredits", [USER, 5]),
        ],
        api_key=None,
        authToken=identity["authToken"],
    )
    assert ok(own_prompt)["system_prompt"] == "My launch assistant."
    assert ok(own_prompt)["external_user"]["id"] == summary["id"]
    assert [r["request_id"] for r in ok(own_library)["requests"]] == [
        r["request_id"] for r in requests[1:]
    ]
    assert ok(own_credits)["remainingCredits"] == pytest.approx(100 - spent)
    assert ok(again)["_id"] == summary["id"]
    assert (refused["status"], grant["status"]) == (403, 403)  # account-level routes


def test_the_users_own_key_directly_and_beside_the_account_key(running: Running) -> None:
    (first,) = running.calls([("createExternalUserSession", [OTHER])])
    user_key = ok(first)["external_api_key"]
    (refreshed,) = running.calls([("createExternalUserSession", [OTHER])])
    assert ok(refreshed)["external_api_key"] is None  # shown once
    # samsar-js sends the identity only; a rotation is one more field in the body.
    rotated = httpx.post(
        f"{running.v1}/external_users/session",
        json={"external_user": OTHER, "rotate_api_key": True},
        headers={"Authorization": f"Bearer {running.key}"},
    )
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["external_api_key"]
    assert new_key.startswith("sk_eu_") and new_key != user_key

    (stale,) = running.calls([("getCreditsBalance", [])], api_key=user_key)
    assert (stale["ok"], stale["status"]) == (False, 401)  # the rotation revoked it
    beside, own, other = running.calls(
        [
            ("getCreditsBalance", []),
            ("getExternalCreditsBalance", [OTHER]),
            ("getExternalCreditsBalance", [USER]),
        ],
        externalUserApiKey=new_key,
    )
    assert ok(beside)["remainingCredits"] == 0  # the user's balance, not the account's
    assert ok(own)["external_user"]["external_user_id"] == "usr_456"
    assert (other["ok"], other["status"]) == (False, 403)
    (direct,) = running.calls([("createExternalAssistantSession", [])], api_key=new_key)
    assert ok(direct)["external_user"]["external_user_id"] == "usr_456"


def test_openai_sdk_embeddings_float_and_base64(running: Running) -> None:
    client = openai.OpenAI(api_key=running.key, base_url=running.v1)
    texts = ["red running shoes", "a blue raincoat"]
    as_base64 = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    as_floats = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=texts, encoding_format="float"
    )
    assert [d.index for d in as_base64.data] == [0, 1]
    assert as_base64.usage.prompt_tokens > 0
    left = np.array([d.embedding for d in as_base64.data])
    right = np.array([d.embedding for d in as_floats.data])
    assert left.shape == (2, 384)
    assert np.allclose(left, right, atol=1e-6)
    assert np.allclose(np.linalg.norm(left, axis=1), 1.0, atol=1e-3)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="text-embedding-3-large", input="x")
    assert refused.value.code == "model_not_found"
