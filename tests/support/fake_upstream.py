"""A stand-in for a paid cloud API at its HTTP boundary: images, and injected faults.

Chat and embeddings are tested against a real OpenAI-compatible server (llama-cpp-python's);
this fake only answers what no local server can (images) and misbehaves on purpose (slow, 500).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.live import free_port

# A 1x1 transparent PNG: a real image, small enough to read in a test.
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6300010000000500010d0a2db40000000049454e44ae426082"
    )
).decode()


class FakeUpstream:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.delay_seconds = 0.0
        # "fail": chat answers 500; "drop": a stream sends two chunks, then the connection dies;
        # "words": an answer of `words` pieces of `word`, streamed `word_delay` seconds apart.
        self.chat_mode = "fail"
        self.words = 40
        self.word = "word "
        self.word_delay = 0.0
        self.sent = 0  # pieces actually streamed by "words" (a reader that stops, stops it)
        # "missing": no Responses API here (404); "image": a model that chose to draw.
        self.responses_mode = "missing"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(
            routes=[
                Route("/v1/images/generations", self.generate, methods=["POST"]),
                Route("/v1/images/edits", self.edit, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/embeddings", self.fail, methods=["POST"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    async def generate(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append({"route": "generate", "body": body})
        return JSONResponse(
            {
                "created": 0,
                "data": [{"b64_json": PNG_1X1, "revised_prompt": f"revised: {body['prompt']}"}],
            }
        )

    async def edit(self, request: Request) -> JSONResponse:
        form = await request.form()
        image = form.get("image")
        data = await image.read() if hasattr(image, "read") else b""
        self.calls.append({"route": "edit", "prompt": form.get("prompt"), "image_bytes": len(data)})
        return JSONResponse({"created": 0, "data": [{"b64_json": PNG_1X1}]})

    async def chat(self, request: Request) -> Response:
        self.calls.append({"route": "chat"})
        if self.chat_mode == "drop":
            return StreamingResponse(self._dropped_stream(), media_type="text/event-stream")
        if self.chat_mode == "words":
            body = await request.json()
            if body.get("stream"):
                return StreamingResponse(self._word_stream(), media_type="text/event-stream")
            return JSONResponse(self._completion(self.word * self.words))
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
            return JSONResponse({"error": {"message": "late"}}, status_code=500)
        return JSONResponse({"error": {"message": "boom"}}, status_code=500)

    async def _dropped_stream(self) -> AsyncIterator[bytes]:
        for text in ("Hel", "lo"):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(0.05)
        raise ConnectionResetError("the upstream went away mid-stream")

    def _completion(self, text: str) -> dict[str, Any]:
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": self.words, "total_tokens": 0},
        }

    async def _word_stream(self) -> AsyncIterator[bytes]:
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
        for _ in range(self.words):
            self.sent += 1
            delta = {"index": 0, "delta": {"content": self.word}, "finish_reason": None}
            yield f"data: {json.dumps({**base, 'choices': [delta]})}\n\n".encode()
            if self.word_delay:
                await asyncio.sleep(self.word_delay)
        last = {"index": 0, "delta": {}, "finish_reason": "stop"}
        yield f"data: {json.dumps({**base, 'choices': [last]})}\n\n".encode()
        usage = {"prompt_tokens": 10, "completion_tokens": self.words, "total_tokens": 0}
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def fail(self, request: Request) -> JSONResponse:
        self.calls.append({"route": "embeddings"})
        return JSONResponse({"error": {"message": "boom"}}, status_code=503)

    async def responses(self, request: Request) -> JSONResponse:
        if self.responses_mode == "missing":
            return JSONResponse({"error": {"message": "no"}}, status_code=404)
        body = await request.json()
        self.calls.append(
            {
                "route": "responses",
                "body": body,
                "authorization": request.headers.get("authorization"),
            }
        )
        return JSONResponse(
            {
                "id": "resp_upstream",
                "object": "response",
                "created_at": 1,
                "status": "completed",
                "model": body["model"],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "output": [
                    {
                        "id": "ig_upstream",
                        "type": "image_generation_call",
                        "status": "completed",
                        "result": PNG_1X1,
                        "revised_prompt": "a red fox in snow",
                    },
                    {
                        "id": "msg_upstream",
                        "type": "message",
                        "role": "assistant",
                        "status": "completed",
                        "content": [
                            {"type": "output_text", "text": "Here is your fox.", "annotations": []}
                        ],
                    },
                ],
                "usage": {
                    "input_tokens": 12,
                    "output_tokens": 5,
                    "total_tokens": 17,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0},
                },
            }
        )

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
