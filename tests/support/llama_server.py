"""llama-cpp-python's own OpenAI-compatible server on loopback: the real `openai` upstream."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from sessionary.providers.llm.local import bundled_gguf
from tests.support.live import free_port


class LlamaServer:
    def __init__(self, log_dir: Path, *, embedding: bool = False, alias: str = "smollm2") -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.alias = alias
        self.log_path = log_dir / f"llama-server-{self.port}.log"
        self._log = self.log_path.open("w")
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(bundled_gguf()),
            "--model_alias", alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", "2048",
        ]  # fmt: skip
        if embedding:
            command += ["--embedding", "true"]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"llama server exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"llama server not ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
