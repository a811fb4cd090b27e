"""The admin CLI against a real database (typer's runner)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sessionary.app import create_app
from sessionary.cli import app as cli
from sessionary.config import Settings

runner = CliRunner()


@pytest.fixture
def env(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    return settings_env


def invoke(*args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_init_creates_the_default_account_once(env: dict[str, str], settings: Settings) -> None:
    first = invoke("init")
    key = next(line for line in first.splitlines() if line.startswith("sk_sy_"))
    # init does not know where `serve` will listen, so it names no URL (serve prints it).
    assert "http://" not in first and "sessionary serve" in first
    assert "with 1000 credits" in first
    second = invoke("init")
    assert "sk_sy_" not in second
    assert "already exists" in second
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        credits = client.get("/v1/credits", headers={"Authorization": f"Bearer {key}"}).json()
        assert credits["remainingCredits"] == 1000


def test_accounts_create_json_prints_only_json(env: dict[str, str]) -> None:
    data = json.loads(invoke("accounts", "create", "shop", "--json"))
    assert set(data) == {"account_id", "api_key"}
    assert data["account_id"].startswith("acct_")
    listed = json.loads(invoke("accounts", "list", "--json"))
    assert [a["name"] for a in listed] == ["shop"]


def test_keys_create_list_revoke(env: dict[str, str], settings: Settings) -> None:
    account = json.loads(invoke("accounts", "create", "shop", "--json"))
    created = json.loads(invoke("keys", "create", account["account_id"], "--name", "ci", "--json"))
    keys = json.loads(invoke("keys", "list", account["account_id"], "--json"))
    assert {k["id"] for k in keys} >= {created["key_id"]}
    assert all("hash" not in k and created["api_key"] not in json.dumps(k) for k in keys)
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        assert client.get("/v1/me", headers=headers).status_code == 200
        invoke("keys", "revoke", created["key_id"])
        assert client.get("/v1/me", headers=headers).status_code == 401
    revoked = json.loads(invoke("keys", "list", "--json"))
    assert next(k for k in revoked if k["id"] == created["key_id"])["revoked_at"]


def test_user_errors_are_one_line_without_traceback(env: dict[str, str]) -> None:
    result = runner.invoke(cli, ["keys", "create", "acct_missing"])
    assert result.exit_code == 1
    assert "No account with the id or name 'acct_missing'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["keys", "revoke", "key_missing"])
    assert result.exit_code == 1


def test_migrate_reports_the_revision(env: dict[str, str]) -> None:
    assert "revision" in invoke("migrate")
    assert json.loads(invoke("migrate", "--json"))["revision"]


def test_credits_grant_and_show(env: dict[str, str]) -> None:
    account = json.loads(invoke("accounts", "create", "shop", "--credits", "12.5", "--json"))
    account_id = account["account_id"]
    assert json.loads(invoke("credits", "show", account_id, "--json"))["remainingCredits"] == 12.5
    granted = json.loads(invoke("credits", "grant", account_id, "0.000001", "--json"))
    assert granted["remainingCredits"] == 12.500001
    shown = invoke("credits", "show", account_id)
    assert "12.500001 credits" in shown
    assert "Last top-up: 0.000001 credits" in shown


@pytest.mark.parametrize("amount", ["0", "-3", "abc", "0.0000001"])
def test_credits_grant_refuses_bad_amounts(env: dict[str, str], amount: str) -> None:
    account = json.loads(invoke("accounts", "create", "shop", "--json"))
    result = runner.invoke(cli, ["credits", "grant", account["account_id"], "--", amount])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    shown = json.loads(invoke("credits", "show", account["account_id"], "--json"))
    assert shown["remainingCredits"] == 0


def test_accounts_set_assistant(env: dict[str, str]) -> None:
    account = json.loads(invoke("accounts", "create", "shop", "--json"))["account_id"]
    shown = json.loads(invoke("accounts", "set-assistant", account, "--model", "gpt-4o", "--json"))
    assert shown == {"account_id": account, "model": "gpt-4o", "system_prompt": None}
    shown = json.loads(
        invoke("accounts", "set-assistant", account, "--system-prompt", "Be brief.", "--json")
    )
    assert shown["model"] == "gpt-4o"
    assert shown["system_prompt"] == "Be brief."
    shown = json.loads(
        invoke("accounts", "set-assistant", account, "--system-prompt", "", "--json")
    )
    assert shown["system_prompt"] is None


def test_account_names_are_accepted_where_an_id_is(env: dict[str, str]) -> None:
    shop = json.loads(invoke("accounts", "create", "shop", "--json"))["account_id"]
    granted = json.loads(invoke("credits", "grant", "shop", "5", "--json"))
    assert granted == {"account_id": shop, "remainingCredits": 5.0}
    assert json.loads(invoke("credits", "show", "shop", "--json"))["remainingCredits"] == 5
    key = json.loads(invoke("keys", "create", "shop", "--json"))
    assert {k["id"] for k in json.loads(invoke("keys", "list", "shop", "--json"))} >= {
        key["key_id"]
    }
    shown = json.loads(invoke("accounts", "set-assistant", "shop", "--model", "m", "--json"))
    assert shown["account_id"] == shop


def test_unknown_or_ambiguous_names_fail_in_one_line(env: dict[str, str]) -> None:
    first = json.loads(invoke("accounts", "create", "twin", "--json"))["account_id"]
    second = json.loads(invoke("accounts", "create", "twin", "--json"))["account_id"]
    result = runner.invoke(cli, ["credits", "show", "twin"])
    assert result.exit_code == 1
    assert "2 accounts are named 'twin'" in result.output
    assert first in result.output and second in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["credits", "grant", "nobody", "3"])
    assert result.exit_code == 1
    assert "No account with the id or name 'nobody'" in result.output
    # The id still works when the name is ambiguous.
    assert json.loads(invoke("credits", "show", first, "--json"))["remainingCredits"] == 0


def test_piped_tables_keep_whole_ids(env: dict[str, str]) -> None:
    """The runner's output is not a terminal: tab-separated lines, every id whole."""
    created = [
        json.loads(invoke("accounts", "create", f"a-rather-long-account-name-{i}", "--json"))
        for i in range(3)
    ]
    for account in created:
        invoke("keys", "create", account["account_id"], "--name", "a long label " * 5)
    lines = invoke("accounts", "list").splitlines()
    assert lines[0].split("\t") == ["id", "name", "created"]
    assert [line.split("\t")[0] for line in lines[1:]] == [a["account_id"] for a in created]
    keys = [line.split("\t") for line in invoke("keys", "list").splitlines()[1:]]
    assert {row[1] for row in keys} == {a["account_id"] for a in created}
    assert all(row[0].startswith("key_") and len(row[0]) == len("key_") + 26 for row in keys)


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_terminal_tables_keep_whole_ids_at_any_width(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    from rich.console import Console

    from sessionary.cli import common

    key_id, account_id = "key_" + "K" * 26, "acct_" + "A" * 26
    label = "a long label " * 6
    terminal = Console(width=width, force_terminal=True, color_system=None)
    monkeypatch.setattr(common, "console", terminal)
    with terminal.capture() as captured:
        common.print_table(
            ("id", "account", "name", "when"), [(key_id, account_id, label, "never")], ids=2
        )
    lines = captured.get().splitlines()
    assert any(key_id in line for line in lines) and any(account_id in line for line in lines)
    # Every field is shown: whole in one place, or wrapped inside its column.
    assert "never" in captured.get()
    assert captured.get().count("label") == 6
    if width >= 120:
        assert lines[0].startswith("┏") and max(len(line) for line in lines) <= width
    else:  # too narrow for a table: one block per row, the id on a line of its own
        assert lines[0] == key_id


def test_init_json_and_serve_announces_its_own_url() -> None:
    from sessionary.cli.server import announced_url

    assert announced_url(Settings(), "127.0.0.1", 8011) == "http://127.0.0.1:8011"
    assert announced_url(Settings(), "0.0.0.0", 8000) == "http://127.0.0.1:8000"
    public = Settings(public_base_url="https://api.example.org/")
    assert announced_url(public, "0.0.0.0", 8000) == "https://api.example.org"


def test_init_and_revoke_speak_json(env: dict[str, str]) -> None:
    first = json.loads(invoke("init", "--json"))
    assert first["account_id"].startswith("acct_") and first["api_key"].startswith("sk_sy_")
    again = json.loads(invoke("init", "--json"))
    assert again == {"account_id": first["account_id"], "api_key": None}
    key = json.loads(invoke("keys", "create", "default", "--json"))
    revoked = json.loads(invoke("keys", "revoke", key["key_id"], "--json"))
    assert revoked["id"] == key["key_id"] and revoked["revoked_at"]
