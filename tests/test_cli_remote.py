"""The CLI commands that talk to a server, as a user runs them: real processes, a real server,
and typer's runner for the in-process paths."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sessionary.cli import app
from tests.support.live import free_port, initialised_server, server_env
from tests.test_search_listings import DATA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data = tmp_path_factory.mktemp("cli-remote") / "data"
    with initialised_server(data, SESSIONARY_DEFAULT_MAX_OUTPUT_TOKENS="12") as (live, key):
        yield {"SESSIONARY_BASE_URL": f"{live.base_url}/v1", "SESSIONARY_API_KEY": key}


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionary", *args],
        env={**server_env(env), "COLUMNS": "200"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_external_users_commands(remote: dict[str, str]) -> None:
    created = ok(cli(remote, "external-users", "create", "shop", "ann", "--email", "a@x.io"))
    user_key = created.strip().splitlines()[-1]
    assert user_key.startswith("sk_eu_")
    again = json.loads(ok(cli(remote, "external-users", "create", "shop", "ann", "--json")))
    assert again["external_api_key"] is None and again["external_user"]["email"] == "a@x.io"
    granted = json.loads(ok(cli(remote, "external-users", "grant", "shop", "ann", "40", "--json")))
    assert Decimal(granted["remaining_credits"]) == 40
    assert "Prompt set." in ok(
        cli(remote, "external-users", "set-prompt", "shop", "ann", "Be brief.")
    )
    shown = ok(cli(remote, "external-users", "show", "shop", "ann"))
    assert "shop:ann" in shown and "40" in shown
    # The user chats with its own key; the turn lands in its library.
    as_user = {**remote, "SESSIONARY_API_KEY": user_key}
    ok(cli(as_user, "chat", stdin="Hello\n/exit\n"))
    library = json.loads(ok(cli(remote, "external-users", "requests", "shop", "ann", "--json")))
    assert [r["route_key"] for r in library["requests"]] == ["/v1/assistant/completion"]
    table = ok(cli(remote, "external-users", "requests", "shop", "ann"))
    assert library["requests"][0]["request_id"] in table
    token = json.loads(ok(cli(remote, "external-users", "login-token", "shop", "ann", "--json")))
    assert token["login_token"].startswith("lt_sy_")
    refused = cli(as_user, "external-users", "grant", "shop", "ann", "5")
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith("error: 403:") and "Traceback" not in refused.stderr


def test_chat_through_stdin_then_resume_and_show_the_transcript(remote: dict[str, str]) -> None:
    first = cli(remote, "chat", "--max-output-tokens", "6", stdin="Hi there\nWhat is 2+2?\n")
    out = ok(first)
    assert out.count("assistant> ") == 2 and "you> Hi there" in out
    session_id = first.stderr.split("Session ", 1)[1].split()[0]
    assert session_id.startswith("sess_")
    ok(cli(remote, "chat", "--session", session_id, stdin="One more.\nexit\nnot sent\n"))
    transcript = json.loads(ok(cli(remote, "sessions", "show", session_id, "--json")))
    said = [m["text"] for m in transcript if m["role"] == "user"]
    assert said == ["Hi there", "What is 2+2?", "One more."]
    assert [m["role"] for m in transcript] == ["user", "assistant"] * 3
    pretty = ok(cli(remote, "sessions", "show", session_id))
    assert "What is 2+2?" in pretty
    listed = json.loads(ok(cli(remote, "sessions", "list", "--json")))
    assert session_id in [s["id"] for s in listed["data"]]
    assert session_id in ok(cli(remote, "sessions", "list"))
    missing = cli(remote, "chat", "--session", "sess_01ZZZZZZZZZZZZZZZZZZZZZZZZ", stdin="x\n")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_remote_commands_in_process_and_their_errors(remote: dict[str, str]) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["sessions", "list", "--json"], env=remote)
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["object"] == "list"
    no_key = runner.invoke(app, ["sessions", "list"], env={**remote, "SESSIONARY_API_KEY": ""})
    assert no_key.exit_code == 1 and "No API key" in no_key.stderr
    bad_key = runner.invoke(
        app, ["templates", "list"], env={**remote, "SESSIONARY_API_KEY": "sk_sy_wrong"}
    )
    assert bad_key.exit_code == 1 and "401" in bad_key.stderr
    down = runner.invoke(
        app,
        ["templates", "list", "--base-url", f"http://127.0.0.1:{free_port()}/v1"],
        env=remote,
    )
    assert down.exit_code == 1 and "Cannot reach" in down.stderr
    bad_grant = runner.invoke(app, ["external-users", "grant", "shop", "ann", "0"], env=remote)
    assert bad_grant.exit_code == 1 and "positive" in bad_grant.stderr


def test_import_of_10000_records_with_progress(remote: dict[str, str], tmp_path: Path) -> None:
    listings = json.loads((DATA / "oslo_listings.json").read_text())
    path = tmp_path / "many.jsonl"
    with path.open("w") as handle:
        for index in range(10_000):
            record = dict(listings[index % len(listings)])
            record["id"] = f"copy-{index}"
            handle.write(json.dumps(record) + "\n")
    done = ok(cli(remote, "templates", "import", str(path), "--batch-size", "2500"))
    assert "Importing many.jsonl" in done and "10000/10000" in done
    assert "10000 records" in done
    template_id = done.split("Template ", 1)[1].split(":", 1)[0].strip()
    status = json.loads(ok(cli(remote, "templates", "status", template_id, "--json")))
    assert status["record_count"] == 10_000
