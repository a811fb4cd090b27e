"""Defaults a new user meets first: the local model's output cap (and so its credit hold), and
logs that are readable in a terminal and JSON in a pipe."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from sessionary.config import Settings
from sessionary.providers.settings import LOCAL_MAX_OUTPUT_TOKENS, ProviderSettings

LOG_ONE_LINE = (
    "from sessionary.config import Settings\n"
    "from sessionary.kit.logging import configure_logging\n"
    "import structlog\n"
    "s = Settings()\n"
    "configure_logging('INFO', json=s.log_json)\n"
    "structlog.get_logger().info('hello', answer=42)\n"
)


def test_the_local_model_has_its_own_smaller_default_cap() -> None:
    assert LOCAL_MAX_OUTPUT_TOKENS == 256
    assert Settings().default_max_output_tokens == LOCAL_MAX_OUTPUT_TOKENS
    remote = Settings(llm=ProviderSettings(provider="openai", model="gpt-4o-mini"))
    assert remote.default_max_output_tokens == 1024
    # An explicit setting wins over the local default, with either provider.
    assert Settings(default_max_output_tokens=12).default_max_output_tokens == 12


def test_an_explicit_cap_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONARY_DEFAULT_MAX_OUTPUT_TOKENS", "900")
    assert Settings().default_max_output_tokens == 900
    monkeypatch.delenv("SESSIONARY_DEFAULT_MAX_OUTPUT_TOKENS")
    monkeypatch.setenv("SESSIONARY_LLM__PROVIDER", "openai")
    assert Settings().default_max_output_tokens == 1024


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("true", True), ("0", False)])
def test_log_json_setting(monkeypatch: pytest.MonkeyPatch, value: str, expected: object) -> None:
    monkeypatch.setenv("SESSIONARY_LOG_JSON", value)
    assert Settings().log_json == expected


def _log_line(env: dict[str, str], tty: bool) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SESSIONARY_")}, **env}
    if not tty:
        done = subprocess.run(
            [sys.executable, "-c", LOG_ONE_LINE], env=env, capture_output=True, text=True
        )
        return done.stderr.strip()
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", LOG_ONE_LINE], env=env, stderr=follower, stdout=subprocess.DEVNULL
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace").strip()


def test_logs_are_json_in_a_pipe_and_readable_on_a_terminal() -> None:
    piped = json.loads(_log_line({}, tty=False))
    assert piped["event"] == "hello" and piped["answer"] == 42
    on_terminal = _log_line({}, tty=True)
    assert "hello" in on_terminal and "answer" in on_terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(on_terminal)
    # Forced either way, whatever stderr is.
    forced = _log_line({"SESSIONARY_LOG_JSON": "true"}, tty=True)
    assert json.loads(forced)["event"] == "hello"
    assert not _log_line({"SESSIONARY_LOG_JSON": "false"}, tty=False).startswith("{")
