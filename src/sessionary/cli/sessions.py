"""`sessionary sessions list|show`: the caller's sessions and their transcripts, on a server."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from sessionary.cli.common import console, print_json, print_table
from sessionary.cli.remote import API_KEY_OPTION, BASE_URL_OPTION, JSON_OPTION, remote

app = typer.Typer(help="Sessions (conversations) on a running server.")


def when(timestamp: int | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M") if timestamp else ""


@app.command("list")
def list_sessions(
    limit: int = typer.Option(20, min=1, max=100),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The most recent sessions of the key's account (or external user)."""
    with remote(base_url, api_key) as client:
        page = client.list_sessions(limit=limit).data
    if as_json:
        print_json(page.model_dump(mode="json"))
        return
    print_table(
        ("id", "last response", "kind", "name", "updated"),
        [(r.id, r.last_response_id, r.kind, r.name, when(r.updated_at)) for r in page.data],
        ids=2,
    )


@app.command("show")
def show(
    session_id: str,
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """A session's transcript, oldest message first."""
    with remote(base_url, api_key) as client:
        messages = []
        after: str | None = None
        while True:
            page = client.list_session_messages(session_id, limit=100, after=after).data
            messages.extend(page.data)
            if not page.has_more:
                break
            after = page.last_id
    if as_json:
        print_json([{**m.model_dump(mode="json"), "text": m.text} for m in messages])
        return
    for message in messages:
        colour = "cyan" if message.role == "user" else "green"
        console.print(f"[bold {colour}]{message.role}[/] [dim]{when(message.created_at)}[/]")
        console.print(message.text, highlight=False, markup=False)
        console.print()
