"""`sessionary external-users ...`: a platform's own users, on a running server (account key)."""

from __future__ import annotations

from typing import Any

import typer

from sessionary.cli.common import console, fail, print_json, print_table
from sessionary.cli.remote import API_KEY_OPTION, BASE_URL_OPTION, JSON_OPTION, remote
from sessionary.client import ExternalUser

app = typer.Typer(help="External users (a platform's own users) on a running server.")

PROVIDER = typer.Argument(..., help="Who identifies the user (your app's name, 'whop', ...).")
KEY = typer.Argument(..., help="The user's unique key in that provider.")


def _user(provider: str, key: str) -> ExternalUser:
    return ExternalUser(provider=provider, unique_key=key)


def _summary_line(summary: Any) -> str:
    return (
        f"{summary.id}  {summary.provider}:{summary.unique_key}  "
        f"{summary.generation_credits} credits, {summary.total_requests} requests"
    )


@app.command("create")
def create(
    provider: str = PROVIDER,
    key: str = KEY,
    email: str = typer.Option(None),
    username: str = typer.Option(None),
    display_name: str = typer.Option(None, "--display-name"),
    rotate_key: bool = typer.Option(False, "--rotate-key", help="Issue a new key, revoke the old."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Create or refresh a user; its own key is printed when new (or rotated)."""
    user = ExternalUser(
        provider=provider, unique_key=key, email=email, username=username, display_name=display_name
    )
    with remote(base_url, api_key) as client:
        made = client.create_external_user_session(user, rotate_api_key=rotate_key).data
    if as_json:
        print_json(made.model_dump(mode="json", by_alias=False))
        return
    console.print(_summary_line(made.external_user), highlight=False)
    if made.external_api_key:
        console.print("User key (shown once):")
        typer.echo(made.external_api_key)


@app.command("show")
def show(
    provider: str = PROVIDER,
    key: str = KEY,
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """A user's balance and counters."""
    with remote(base_url, api_key) as client:
        credits = client.get_external_credits_balance(_user(provider, key)).data
    if as_json:
        print_json(credits.model_dump(mode="json"))
        return
    summary = credits.external_user
    console.print(_summary_line(summary), highlight=False)
    if summary is not None:
        console.print(
            f"used {summary.total_credits_used}, granted {summary.total_credits_purchased}, "
            f"last request {summary.last_request_at or 'never'}",
            highlight=False,
        )


@app.command("grant")
def grant(
    provider: str = PROVIDER,
    key: str = KEY,
    credits: int = typer.Argument(..., help="Whole credits, moved from the account's balance."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Move credits from the account to a user."""
    if credits <= 0:
        fail("The amount of credits must be a positive whole number.")
    with remote(base_url, api_key) as client:
        granted = client.grant_external_user_credits(_user(provider, key), credits).data
    if as_json:
        print_json(granted.model_dump(mode="json"))
        return
    console.print(
        f"Granted {granted.credits_granted}; the user has {granted.remaining_credits}, "
        f"the account {granted.internal_remaining_credits}.",
        highlight=False,
    )


@app.command("set-prompt")
def set_prompt(
    provider: str = PROVIDER,
    key: str = KEY,
    prompt: str = typer.Argument(..., help="The user's system prompt ('' clears it)."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Set (or clear) the user's own assistant prompt."""
    with remote(base_url, api_key) as client:
        answer = client.set_external_assistant_system_prompt(
            prompt or None, external_user=_user(provider, key)
        ).data
    if as_json:
        print_json(answer.model_dump(mode="json"))
        return
    console.print("Prompt cleared." if not prompt else "Prompt set.")


@app.command("requests")
def requests(
    provider: str = PROVIDER,
    key: str = KEY,
    limit: int = typer.Option(20, min=1, max=100),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The user's billed requests, newest first."""
    with remote(base_url, api_key) as client:
        page = client.list_external_user_requests(_user(provider, key), limit=limit).data
    if as_json:
        print_json(page.model_dump(mode="json"))
        return
    print_table(
        ("request", "route", "credits", "when", "published"),
        [
            (
                r.request_id,
                r.route_key,
                r.credits_charged,
                r.created_at,
                "yes" if r.is_published else "",
            )
            for r in page.requests
        ],
    )


@app.command("login-token")
def login_token(
    provider: str = PROVIDER,
    key: str = KEY,
    redirect: str = typer.Option(None, help="A path on the client app to land on."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """A single-use login token (and URL) for the user's client app."""
    with remote(base_url, api_key) as client:
        token = client.create_external_user_login_token(_user(provider, key), redirect).data
    if as_json:
        print_json(token.model_dump(mode="json"))
        return
    console.print(f"Expires {token.expires_at}", highlight=False)
    typer.echo(token.login_url or token.login_token)
