"""A minimal, fast OpenAI-compatible upstream for overhead measurements: it answers Responses and
chat completions at once with a fixed small answer, so what is measured is the gateway in front.

Run: `python -m uvicorn bench.stub_upstream:app --port P --no-access-log --log-level warning`.
"""

from __future__ import annotations

import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TEXT = "Short answer from the stub."
USAGE_RESPONSES = {"input_tokens": 12, "output_tokens": 6, "total_tokens": 18}


def _json(payload: dict[str, object]) -> Response:
    return Response(json.dumps(payload), media_type="application/json")


async def responses(request: Request) -> Response:
    body = await request.json()
    return _json(
        {
            "id": "resp_stub",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body.get("model", "stub"),
            "output": [
                {
                    "id": "msg_stub",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                **USAGE_RESPONSES,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
    )


async def chat(request: Request) -> Response:
    body = await request.json()
    return _json(
        {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
        }
    )


async def models(request: Request) -> Response:
    return _json({"object": "list", "data": [{"id": "stub", "object": "model", "created": 0}]})


app = Starlette(
    routes=[
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]
)
