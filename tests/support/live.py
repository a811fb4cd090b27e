"""A real Sessionary server process on loopback, for tests that drive it like a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(settings_env: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONARY_")}
    env.update(settings_env)
    env.setdefault("SESSIONARY_LOG_LEVEL", "WARNING")
    return env


def run_cli(args: list[str], env: Mapping[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sessionary", *args],
        env=server_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"sessionary {args} failed: {done.stderr}\n{done.stdout}")
    return done.stdout


REPO = Path(__file__).resolve().parents[2]


class LiveServer:
    """`sessionary serve`, or with `app_factory` uvicorn serving that factory (after migrating)."""

    def __init__(
        self,
        env: Mapping[str, str],
        workers: int = 1,
        cwd: Path | None = None,
        app_factory: str | None = None,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(env.get("SESSIONARY_DATA_DIR", ".")) / f"server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        port_args = ["--port", str(self.port), "--workers", str(workers)]
        if app_factory is None:
            command = [sys.executable, "-m", "sessionary", "serve", *port_args]
        else:
            run_cli(["migrate"], env)
            command = [sys.executable, "-m", "uvicorn", app_factory, "--factory", *port_args]
            command += ["--log-level", "warning", "--no-access-log"]
            cwd = cwd or REPO
        self.process = subprocess.Popen(
            command,
            env=server_env(env),
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self._log.close()


@contextmanager
def initialised_server(data_dir: Path, **env: str) -> Iterator[tuple[LiveServer, str]]:
    """`sessionary init` (printing the default account's key), then a served process with it."""
    settings = {"SESSIONARY_DATA_DIR": str(data_dir), **env}
    output = run_cli(["init"], settings)
    key = next(line for line in output.splitlines() if line.startswith("sk_sy_"))
    server = LiveServer(settings)
    try:
        yield server, key
    finally:
        server.stop()
