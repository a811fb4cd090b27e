"""`sessionary chat`: an interactive session with streamed answers (`--session` resumes one)."""

from __future__ import annotations

import sys

import typer

from sessionary.cli.common import console, err_console
from sessionary.cli.remote import API_KEY_OPTION, BASE_URL_OPTION, remote
from sessionary.client import Sessionary

EXIT_WORDS = frozenset({"/exit", "/quit", "exit", "quit"})


def _turn(client: Sessionary, session_id: str, text: str, max_output_tokens: int | None) -> None:
    options = {"max_output_tokens": max_output_tokens} if max_output_tokens else {}
    stream = client.create_assistant_completion(session_id, text, stream=True, **options)
    with stream:
        for delta in stream.text_deltas():
            console.print(delta, end="", highlight=False, markup=False, soft_wrap=True)
        final = stream.final_response()
    console.print()
    credits = (final.model_extra or {}).get("credits") or {}
    if final.status == "incomplete":
        err_console.print("[dim](stopped at the output limit)[/]")
    if credits:
        err_console.print(f"[dim]{credits.get('charged', '?')} credits[/]", highlight=False)


def chat(
    session: str = typer.Option(
        None, "--session", help="Resume this session instead of a new one."
    ),
    max_output_tokens: int = typer.Option(None, min=1, help="Cap each answer's length."),
    base_url: str = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
) -> None:
    """Talk to the assistant: one line a turn, answers streamed; /exit or Ctrl-D to leave."""
    with remote(base_url, api_key) as client:
        if session is None:
            session = client.create_assistant_session(session_name="cli chat").data.session_id
        else:
            client.list_session_messages(session, limit=1)  # 404 / 403 before the first turn
        err_console.print(f"Session {session} (resume with --session {session})", highlight=False)
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                console.print("[bold cyan]you>[/] ", end="")
            line = sys.stdin.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in EXIT_WORDS:
                break
            if not interactive:
                console.print(f"you> {text}", highlight=False, markup=False)
            console.print("[bold green]assistant>[/] ", end="")
            _turn(client, session, text, max_output_tokens)
