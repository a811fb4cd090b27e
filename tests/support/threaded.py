"""An ASGI app served by uvicorn on a thread of the test process (fake upstreams, proxies)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from tests.support.live import free_port


class ThreadedServer:
    """Serves `app` on 127.0.0.1 at a free port until `stop()`; ready when constructed."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
