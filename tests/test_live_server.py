"""What `make run` promises, with real processes: init prints a key, serve answers with it."""

from __future__ import annotations

import httpx
import pytest

from tests.support.live import LiveServer, run_cli

pytestmark = pytest.mark.slow


def test_init_then_serve_then_call_with_the_printed_key(settings_env: dict[str, str]) -> None:
    output = run_cli(["init"], settings_env)
    key = next(line for line in output.splitlines() if line.startswith("sk_sy_"))
    server = LiveServer(settings_env, workers=2)
    try:
        for prefix in ("/v1", "/api/v1"):
            response = httpx.get(
                f"{server.base_url}{prefix}/me", headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200, response.text
        refused = httpx.get(f"{server.base_url}/v1/me", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{server.base_url}/docs").status_code == 200
        # serve told the user the URL it really listens on (init cannot know it).
        assert f"base URL {server.base_url}/v1" in server.log_path.read_text()
        assert "http://" not in output
    finally:
        server.stop()
