"""A stand-in for a paid cloud API at its HTTP boundary: images, function calls, and faults.

Chat and embeddings are tested against a real OpenAI-compatible server (llama-cpp-python's);
this fake only answers what no local server can (images, a model that reliably chooses a function
call) and misbehaves on purpose (slow, 500).

Scripted answers, for function tools end to end:

    fake.script_tool_calls([("get_weather", {"city": "Oslo"})])  # the next answers: this call
    fake.script_text("It is sunny in Oslo.")  # then this text
    fake.responses_mode = "script"  # also answer the Responses API (else it is missing: 404)

Scripted answers are taken in order, one a request, and the last one repeats. Both APIs answer
them, plain or streamed (arguments in several chunks); `fake.bodies("chat")` /
`fake.bodies("responses")` are the request bodies received, to check what the provider sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.threaded import ThreadedServer

# A 1x1 transparent PNG: a real image, small enough to read in a test.
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6300010000000500010d0a2db40000000049454e44ae426082"
    )
).decode()


@dataclass(frozen=True)
class Scripted:
    """One scripted answer: calls (name, arguments) and/or text."""

    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    text: str = ""


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def _pieces(text: str, count: int = 3) -> list[str]:
    """`text` cut in `count` pieces (fewer when short), as a server streams arguments."""
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class FakeUpstream:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.delay_seconds = 0.0
        # "fail": chat answers 500; "drop": a stream sends two chunks, then the connection dies;
        # "words": an answer of `words` pieces of `word`, streamed `word_delay` seconds apart
        # (whole, after `delay_seconds`).
        self.chat_mode = "fail"
        self.words = 40
        self.word = "word "
        self.word_delay = 0.0
        self.sent = 0  # pieces actually streamed by "words" (a reader that stops, stops it)
        # "missing": no Responses API here (404); "image": a model that chose to draw;
        # "script": the scripted answers (as chat_mode "script" does for chat completions).
        self.responses_mode = "missing"
        self.script: list[Scripted] = []
        self.answered = 0  # scripted answers given
        app = Starlette(
            routes=[
                Route("/v1/images/generations", self.generate, methods=["POST"]),
                Route("/v1/images/edits", self.edit, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/embeddings", self.fail, methods=["POST"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
            ]
        )
        self.served = ThreadedServer(app)
        self.port = self.served.port
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

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

    # Scripted answers

    def script_tool_calls(
        self, calls: Sequence[tuple[str, dict[str, Any]]], *, text: str = ""
    ) -> None:
        """Queue an answer that calls these functions (after `text`, if any)."""
        self.script.append(Scripted(tuple(calls), text))
        self.chat_mode = "script"

    def script_text(self, text: str) -> None:
        """Queue a plain text answer."""
        self.script.append(Scripted(text=text))
        self.chat_mode = "script"

    def bodies(self, route: str) -> list[dict[str, Any]]:
        """The bodies of the requests received on `route` ("chat" or "responses"), in order
        (without the provider's probe of the Responses API)."""
        return [
            c["body"]
            for c in self.calls
            if c["route"] == route and "body" in c and c["body"].get("input") != "ping"
        ]

    def reset(self) -> None:
        self.calls.clear()
        self.script.clear()
        self.answered = 0
        self.chat_mode = "fail"
        self.responses_mode = "missing"

    def _next_answer(self) -> Scripted:
        if not self.script:
            return Scripted(text="Nothing was scripted.")
        answer = self.script[min(self.answered, len(self.script) - 1)]
        self.answered += 1
        return answer

    def _scripted_chat(self, body: dict[str, Any]) -> Response:
        answer = self._next_answer()
        ids = [f"call_fake{self.answered}_{i}" for i in range(len(answer.calls))]
        if body.get("stream"):
            return StreamingResponse(
                self._scripted_chat_stream(answer, ids), media_type="text/event-stream"
            )
        message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
        if answer.calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
                for call_id, (name, arguments) in zip(ids, answer.calls, strict=True)
            ]
        return JSONResponse(
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if answer.calls else "stop",
                    }
                ],
                "usage": {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28},
            }
        )

    async def _scripted_chat_stream(self, answer: Scripted, ids: list[str]) -> AsyncIterator[bytes]:
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fake"}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return _sse({**base, "choices": [choice]})

        yield chunk({"role": "assistant", "content": ""})
        for piece in _pieces(answer.text) if answer.text else ():
            yield chunk({"content": piece})
        for index, (call_id, (name, arguments)) in enumerate(zip(ids, answer.calls, strict=True)):
            first = {"name": name, "arguments": ""}
            call = {"index": index, "id": call_id, "type": "function", "function": first}
            yield chunk({"tool_calls": [call]})
            for piece in _pieces(json.dumps(arguments)):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls" if answer.calls else "stop")
        usage = {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}
        yield _sse({**base, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    def _scripted_output(self, answer: Scripted) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = []
        if answer.text:
            content = [{"type": "output_text", "text": answer.text, "annotations": []}]
            output.append(
                {
                    "id": f"msg_fake{self.answered}",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": content,
                }
            )
        for index, (name, arguments) in enumerate(answer.calls):
            output.append(
                {
                    "id": f"fc_fake{self.answered}_{index}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": f"call_fake{self.answered}_{index}",
                    "name": name,
                    "arguments": json.dumps(arguments),
                }
            )
        return output

    def _response(self, body: dict[str, Any], output: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": "resp_upstream",
            "object": "response",
            "created_at": 1,
            "status": "completed",
            "model": body["model"],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "output": output,
            "usage": {
                "input_tokens": 12,
                "output_tokens": 5,
                "total_tokens": 17,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    async def _scripted_responses_stream(
        self, body: dict[str, Any], output: list[dict[str, Any]]
    ) -> AsyncIterator[bytes]:
        sequence = iter(range(1_000_000))
        final = self._response(body, output)

        def event(kind: str, **fields: Any) -> bytes:
            return _sse({"type": kind, "sequence_number": next(sequence), **fields})

        yield event("response.created", response={**final, "status": "in_progress", "output": []})
        for index, item in enumerate(output):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                yield event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
                for piece in _pieces(text):
                    yield event(
                        "response.output_text.delta",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        delta=piece,
                        logprobs=[],
                    )
            else:
                started = {**item, "status": "in_progress", "arguments": ""}
                yield event("response.output_item.added", output_index=index, item=started)
                for piece in _pieces(item["arguments"]):
                    yield event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=piece,
                    )
                yield event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            yield event("response.output_item.done", output_index=index, item=item)
        yield event("response.completed", response=final)

    # Routes

    async def chat(self, request: Request) -> Response:
        body = await request.json() if self.chat_mode == "script" else None
        self.calls.append({"route": "chat", **({"body": body} if body is not None else {})})
        if body is not None:
            return self._scripted_chat(body)
        if self.chat_mode == "drop":
            return StreamingResponse(self._dropped_stream(), media_type="text/event-stream")
        if self.chat_mode == "words":
            body = await request.json()
            if body.get("stream"):
                return StreamingResponse(self._word_stream(), media_type="text/event-stream")
            await asyncio.sleep(self.delay_seconds)  # a slow whole answer
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

    async def responses(self, request: Request) -> Response:
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
        if self.responses_mode == "script":
            if not isinstance(body.get("input"), list):  # the provider's probe: not an answer
                return JSONResponse(self._response(body, []))
            output = self._scripted_output(self._next_answer())
            if body.get("stream"):
                return StreamingResponse(
                    self._scripted_responses_stream(body, output), media_type="text/event-stream"
                )
            return JSONResponse(self._response(body, output))
        return JSONResponse(
            self._response(
                body,
                [
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
            )
        )

    def stop(self) -> None:
        self.served.stop()
