"""Files sent inline (PDF and text) on the Responses API, Samsar's completion and chat completions.

PDFs are generated in the test. What matters: the file's text reaches the model (the request the
model received holds it, and input tokens grow by its size), a history replays it, and every file
the server cannot or will not read is a 400 naming the field and the limit, with nothing charged.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from sessionary.config import Settings
from sessionary.conversations.models import ConversationMessage
from sessionary.kit.db import Database
from sessionary.settings.files import FileInputSettings
from tests.conftest import Tenant
from tests.support.pdfs import data_url, make_pdf
from tests.support.recording import RecordingChat, record_chat
from tests.test_assistant import balance, new_session
from tests.test_auth import assert_error
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

FUNDS = 100_000_000  # 100 credits
MODEL = "smollm2-135m-instruct"
MAX_PAGES, MAX_FILES, MAX_BYTES = 3, 2, 20_000
REPORT = [
    "Quarterly report of the Zorblax Lantern Company\n"
    "Revenue grew by twelve percent, mostly from copper lanterns sold in Lisbon.",
    "Costs fell because the glass furnace in Porto now runs on solar power.\n"
    "The board approved a new workshop in Coimbra for next spring.",
]
REPORT_WORDS = ["Zorblax", "copper lanterns", "glass furnace in Porto", "workshop in Coimbra"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Small limits, so going over each one costs the test nothing."""
    limits = FileInputSettings(max_pages=MAX_PAGES, max_files=MAX_FILES, max_bytes=MAX_BYTES)
    return settings.model_copy(update={"files": limits})


@pytest.fixture
def funded(db: Database, tenant: Tenant) -> Tenant:
    grant(db, tenant, FUNDS)
    return tenant


@pytest.fixture
def recorder(app: FastAPI) -> RecordingChat:
    return record_chat(app)


@pytest.fixture
def sdk(client: TestClient, funded: Tenant) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=funded.api_key, http_client=client, max_retries=0
    )


def pdf_part(pages: list[str], filename: str = "report.pdf") -> dict[str, Any]:
    return {"type": "input_file", "filename": filename, "file_data": data_url(make_pdf(pages))}


def asked(text: str, *parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": text}, *parts]}]


def model_text(recorder: RecordingChat, index: int = -1) -> str:
    return "\n".join(m.text for m in recorder.requests[index].messages)


def test_a_pdfs_text_reaches_the_model_and_is_billed_as_input(
    sdk: openai.OpenAI, recorder: RecordingChat, db: Database, funded: Tenant
) -> None:
    question = "What does the file say?"
    plain = sdk.responses.with_raw_response.create(input=question, max_output_tokens=4)
    with_file = sdk.responses.with_raw_response.create(
        input=asked(question, pdf_part(REPORT)),  # type: ignore[arg-type]
        max_output_tokens=4,
    )
    seen = model_text(recorder)
    assert all(words in seen for words in REPORT_WORDS)
    assert '<file name="report.pdf">' in seen
    plain_usage, file_usage = plain.parse().usage, with_file.parse().usage
    assert plain_usage is not None and file_usage is not None
    # The pages hold ~50 words: the input grows by at least as many tokens.
    words = len(" ".join(REPORT).split())
    assert file_usage.input_tokens - plain_usage.input_tokens >= words
    charged = [micro(r.headers["x-credits-charged"]) for r in (plain, with_file)]
    assert 0 < charged[0] < charged[1]  # the file's tokens are paid for
    assert balance(db, funded) == FUNDS - sum(charged)


def micro(credits: str) -> int:
    return round(float(credits) * 1_000_000)


def test_the_stored_turn_keeps_the_text_not_the_bytes_and_its_history_replays_it(
    sdk: openai.OpenAI, client: TestClient, recorder: RecordingChat, funded: Tenant
) -> None:
    first = sdk.responses.create(
        input=asked("Read this.", pdf_part(REPORT)),  # type: ignore[arg-type]
        max_output_tokens=4,
    )
    items = client.get(f"/v1/responses/{first.id}/input_items", headers=funded.headers).json()
    (message,) = items["data"]
    text_part, file_part = message["content"]
    assert text_part == {"type": "input_text", "text": "Read this."}
    assert file_part["type"] == "input_file" and file_part["filename"] == "report.pdf"
    assert "Zorblax" in file_part["text"] and "file_data" not in file_part
    sdk.responses.create(
        input="And where is the new workshop?", previous_response_id=first.id, max_output_tokens=4
    )
    assert "workshop in Coimbra" in model_text(recorder)  # the history replays the file's text


def test_text_files_as_file_data_or_as_a_data_url_in_file_url(
    sdk: openai.OpenAI, recorder: RecordingChat
) -> None:
    notes = "Shopping list: saffron, quince paste, and seventeen candles."
    encoded = base64.b64encode(notes.encode()).decode()
    for part in (
        {"type": "input_file", "filename": "notes.txt", "file_data": encoded},
        {"type": "input_file", "file_url": f"data:text/plain;base64,{encoded}"},
    ):
        sdk.responses.create(input=asked("Summarise.", part), max_output_tokens=4)  # type: ignore[arg-type]
        assert notes in model_text(recorder)
    assert '<file name="notes.txt">' in model_text(recorder, 0)
    assert '<file name="file.txt">' in model_text(recorder, 1)


def test_chat_completions_read_file_parts_in_openais_chat_shape(
    sdk: openai.OpenAI, recorder: RecordingChat, db: Database
) -> None:
    pdf = data_url(make_pdf(REPORT))
    messages: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What does the report say?"},
                {"type": "file", "file": {"file_data": pdf, "filename": "q3.pdf"}},
            ],
        }
    ]
    plain = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What does the report say?"}],
        max_tokens=4,
    )
    completion = sdk.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=4, store=True
    )
    seen = model_text(recorder)
    assert '<file name="q3.pdf">' in seen and all(words in seen for words in REPORT_WORDS)
    assert plain.usage is not None and completion.usage is not None
    assert completion.usage.prompt_tokens - plain.usage.prompt_tokens >= 40
    with db.session(write=False) as session:  # stored: the text part, then the file's text
        (row,) = session.scalars(
            select(ConversationMessage).where(ConversationMessage.role == "user")
        ).all()
    text_part, file_part = json.loads(row.content_json)
    assert text_part == {"type": "input_text", "text": "What does the report say?"}
    assert file_part["filename"] == "q3.pdf" and "Zorblax" in file_part["text"]
    assert "file_data" not in row.content_json and '<file name="q3.pdf">' in row.text


def test_samsar_completion_reads_a_file_on_its_session(
    client: TestClient, recorder: RecordingChat, funded: Tenant
) -> None:
    session_id = new_session(client, funded)
    answer = client.post(
        "/v1/assistant/completion",
        json={
            "session_id": session_id,
            "input": asked("Summarise.", pdf_part(REPORT)),
            "max_output_tokens": 4,
        },
        headers=funded.headers,
    )
    assert answer.status_code == 200, answer.text
    assert "glass furnace in Porto" in model_text(recorder)


# Each: (the file part, the error code, words the message must hold, the param's end).
REFUSED: list[tuple[dict[str, Any], str, str, str]] = [
    (
        {"file_data": data_url(b"%PDF-1.7\nnot really a pdf")},
        "invalid_file",
        "could not be read",
        "",
    ),
    ({"file_data": data_url(make_pdf(REPORT)[:300])}, "invalid_file", "could not be read", ""),
    (
        {"file_data": data_url(make_pdf(REPORT, user_password="hunter2"))},
        "file_encrypted",
        "encrypted",
        "",
    ),
    ({"file_data": data_url(make_pdf(["a page"] * 4))}, "too_many_pages", "limit is 3", ""),
    (
        {"file_data": data_url(b"x" * (MAX_BYTES + 1), "text/plain")},
        "file_too_large",
        str(MAX_BYTES),
        ".file_data",
    ),
    ({"file_data": "data:application/pdf;base64,%%%"}, "invalid_file_data", "base64", ".file_data"),
    ({"file_id": "file-abc123"}, "file_id_not_supported", "Files API", ".file_id"),
    (
        {"file_url": "https://example.com/a.pdf"},
        "file_url_not_supported",
        "fetches no",
        ".file_url",
    ),
    (
        {"file_data": data_url(b"\x89PNG\r\n", "image/png")},
        "unsupported_file_type",
        "image/png",
        "",
    ),
    ({"file_data": data_url(make_pdf(["\n"]))}, "file_has_no_text", "No text", ""),
    ({"file_data": data_url(b"\xff\xfe\x00\x01", "text/plain")}, "invalid_file", "UTF-8", ""),
]


def test_files_that_cannot_be_read_are_400s_naming_why_and_cost_nothing(
    client: TestClient, recorder: RecordingChat, db: Database, funded: Tenant
) -> None:
    session_id = new_session(client, funded)
    for source, code, words, param_end in REFUSED:
        attempts = [
            (
                "/v1/responses",
                {"input": asked("Read.", {"type": "input_file", **source})},
                "input[0].content[1]",
            ),
            (
                "/v1/assistant/completion",
                {"session_id": session_id, "input": [{"type": "input_file", **source}]},
                "input[0]",
            ),
            (
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": [{"type": "file", "file": source}]}]},
                "messages[0].content[0].file",
            ),
        ]
        for path, body, param in attempts:
            error = assert_error(client.post(path, json=body, headers=funded.headers), 400, code)
            assert words in error["message"], (path, code, error)
            assert error["param"] == param + param_end, (path, code, error)
    assert recorder.requests == []  # the model never ran
    assert balance(db, funded) == FUNDS


def test_too_many_files_and_files_where_none_belong_are_400s(
    client: TestClient, recorder: RecordingChat, db: Database, funded: Tenant
) -> None:
    note = {"type": "input_file", "file_data": data_url(b"a note", "text/plain")}
    many = client.post(
        "/v1/responses", json={"input": asked("Read.", *[note] * 3)}, headers=funded.headers
    )
    assert str(MAX_FILES) in assert_error(many, 400, "too_many_files")["message"]
    as_assistant = client.post(
        "/v1/responses",
        json={"input": [{"role": "assistant", "content": [note]}, *asked("Go on.")]},
        headers=funded.headers,
    )
    assert assert_error(as_assistant, 400)["param"] == "input[0].content[0]"
    system_file = client.post(
        "/v1/chat/completions",
        json={
            "messages": [
                {"role": "system", "content": [{"type": "file", "file": {"file_data": "x"}}]},
                {"role": "user", "content": "Hi"},
            ]
        },
        headers=funded.headers,
    )
    assert assert_error(system_file, 400)["param"] == "messages[0].content[0].type"
    no_file = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": [{"type": "file"}]}]},
        headers=funded.headers,
    )
    assert assert_error(no_file, 400, "invalid_file")["param"] == "messages[0].content[0].file"
    assert recorder.requests == []
    assert balance(db, funded) == FUNDS


def test_a_pdf_encrypted_without_a_user_password_is_read(
    sdk: openai.OpenAI, recorder: RecordingChat
) -> None:
    """Such a PDF (permissions only) opens in any viewer without a password, so it is read."""
    locked = make_pdf(["Only the owner may print this page."], user_password="")
    part = {"type": "input_file", "filename": "locked.pdf", "file_data": data_url(locked)}
    sdk.responses.create(input=asked("Read.", part), max_output_tokens=4)  # type: ignore[arg-type]
    assert "Only the owner may print this page." in model_text(recorder)


def test_a_file_too_long_for_the_model_is_a_400_and_free(
    client: TestClient, recorder: RecordingChat, db: Database, funded: Tenant
) -> None:
    """Within the byte limit, beyond the local model's context window (8,192 tokens)."""
    digits = " ".join(f"{n:04d}" for n in range(MAX_BYTES // 5 - 10)).encode()
    source = {"file_data": data_url(digits, "text/plain"), "filename": "numbers.txt"}
    responses = client.post(
        "/v1/responses",
        json={"input": asked("Sum these.", {"type": "input_file", **source})},
        headers=funded.headers,
    )
    assert "context window" in assert_error(responses, 400, "context_length_exceeded")["message"]
    chat = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": [{"type": "file", "file": source}]}]},
        headers=funded.headers,
    )
    assert assert_error(chat, 400)["param"] == "messages"
    assert recorder.requests == []
    assert balance(db, funded) == FUNDS
