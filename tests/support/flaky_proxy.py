"""A proxy in front of a real server that loses answers on purpose, to test client retries.

`faults` is consumed one per request: "lose" forwards the request (the server does the work) but
answers 502 as if the answer was lost on the way back; "refuse" answers 503 with Retry-After
without forwarding. Then requests pass through.
"""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.threaded import ThreadedServer


class FlakyProxy:
    def __init__(self, target: str, faults: list[str]) -> None:
        self.target = target.rstrip("/")
        self.faults = list(faults)
        self.seen: list[tuple[str, str | None]] = []  # (path, Idempotency-Key)
        app = Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST"])])
        self.served = ThreadedServer(app)
        self.port = self.served.port
        self.base_url = f"http://127.0.0.1:{self.port}"

    async def forward(self, request: Request) -> Response:
        self.seen.append((request.url.path, request.headers.get("idempotency-key")))
        fault = self.faults.pop(0) if self.faults else None
        if fault == "refuse":
            return JSONResponse(
                {"error": {"message": "busy", "type": "server_error"}},
                status_code=503,
                headers={"Retry-After": "0"},
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with httpx.AsyncClient(timeout=120) as client:
            answer = await client.request(
                request.method,
                self.target + request.url.path,
                params=request.query_params,
                content=await request.body(),
                headers=headers,
            )
        if fault == "lose":
            return JSONResponse({"error": {"message": "lost", "type": "server_error"}}, 502)
        passed = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
        }
        return Response(answer.content, status_code=answer.status_code, headers=passed)

    def stop(self) -> None:
        self.served.stop()
