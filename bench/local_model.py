"""The local chat model, measured: speed, a dozen fixed prompts, JSON-schema compliance, loops.

`python -m bench.local_model [--gguf PATH ...] [--runs N] [--out FILE]` runs every configuration
through the server's own provider (`LlamaCppChat`, so the chat template, the sampling defaults and
the repetition guard are the ones served) and prints a Markdown table; `--out` also keeps every
answer as JSON, to be read and judged by a person (the table only counts what a program can).

Configurations: the bundled SmolLM2-135M with the served defaults, the same with the sampling of
before (llama.cpp's defaults, no penalty, no guard: the loops the guard exists for), and any other
GGUF given with `--gguf` (served defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sessionary.providers.llm.local as local
from sessionary.assistant.enhance import enhance_request, tidy
from sessionary.assistant.prompts import DEFAULT_SYSTEM_PROMPT
from sessionary.providers.base import ChatMessage, ChatRequest, ChatResult
from sessionary.providers.llm.repetition import repeated_ngrams
from sessionary.providers.settings import LOCAL_MAX_OUTPUT_TOKENS, ProviderSettings

SYSTEM = ChatMessage("system", DEFAULT_SYSTEM_PROMPT)
PROMPTS = [
    "Write a one-line launch caption.",
    "Write a caption.",
    "Hello!",
    "Write a short product description for a blue ceramic mug.",
    "Explain in two sentences what an API key is.",
    "Give three tips for a first trip to Oslo, as a list.",
    "What is the capital of France?",
    "Translate to French: Good morning, how are you?",
    "Summarise in one sentence: The meeting moved from Monday to Wednesday because the room "
    "was double-booked; everyone must confirm by Friday.",
    "Write a friendly two-line reply to a customer whose order is late.",
]
TWO_TURNS = ("Hi, my name is Ann.", "What is my name?", "ann")
ENHANCE = ["we sell good shoes", "new coffee shop opening monday on main street, come try it"]
JSON_TASKS = [
    (
        "Give a city and whether it is sunny today, as JSON.",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
            "required": ["city", "sunny"],
        },
    ),
    (
        "Extract the product and its price from: 'The blue mug costs 12 euros.' Answer as JSON.",
        {
            "type": "object",
            "properties": {"product": {"type": "string"}, "price": {"type": "number"}},
            "required": ["product", "price"],
        },
    ),
    (
        "Call the tool get_weather for Oslo. Answer as JSON with the tool name and arguments.",
        {
            "type": "object",
            "properties": {
                "name": {"enum": ["get_weather"]},
                "arguments": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
            "required": ["name", "arguments"],
        },
    ),
]
OLD_SAMPLING = local.LocalSampling(
    temperature=0.8,
    top_p=0.95,
    repeat_penalty=1.0,
    frequency_penalty=0.0,
    repetition_times=10**9,  # no guard
)


@dataclass
class Config:
    label: str
    gguf: Path | None
    sampling: local.LocalSampling


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    """Enough of JSON Schema for the tasks above (types, required, enum)."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        return (
            isinstance(value, dict)
            and all(k in value for k in schema.get("required", []))
            and all(
                _valid(value[k], s) for k, s in schema.get("properties", {}).items() if k in value
            )
        )
    types = {"string": str, "boolean": bool, "number": (int, float)}
    return isinstance(value, types[kind]) if kind in types else True


async def _run(config: Config, runs: int) -> dict[str, Any]:
    local.SAMPLING = config.sampling
    chat = local.LlamaCppChat(
        ProviderSettings(provider="local", gguf_path=config.gguf, n_threads=None)
    )
    started = time.perf_counter()
    chat.load()
    load_s = time.perf_counter() - started
    answers: list[dict[str, Any]] = []
    rates: list[float] = []
    at_cap = looped = stops = 0

    async def ask(messages: list[ChatMessage], **options: Any) -> ChatResult:
        begun = time.perf_counter()
        result = await chat.generate(ChatRequest(messages, **options))
        seconds = time.perf_counter() - begun
        if result.usage.output_tokens >= 16:
            rates.append(result.usage.output_tokens / seconds)
        return result

    for _ in range(runs):
        for prompt in PROMPTS:
            result = await ask([SYSTEM, ChatMessage("user", prompt)])
            at_cap += result.usage.output_tokens >= LOCAL_MAX_OUTPUT_TOKENS
            looped += bool(repeated_ngrams(result.text))
            stops += result.finish_reason == "repetition"
            answers.append(
                {"prompt": prompt, "answer": result.text, "finish": result.finish_reason}
            )
    recalled = 0
    for _ in range(runs):
        intro, question, expected = TWO_TURNS
        first = await ask([SYSTEM, ChatMessage("user", intro)])
        history = [SYSTEM, ChatMessage("user", intro), ChatMessage("assistant", first.text)]
        second = await ask([*history, ChatMessage("user", question)])
        recalled += expected in second.text.casefold()
        answers.append({"prompt": f"{intro} / {question}", "answer": second.text})
    rewrites = []
    for message in ENHANCE:
        request, words = enhance_request(message, None, 30, None)
        result = await chat.generate(request)
        rewrites.append(tidy(result.text, words))
        answers.append({"prompt": f"enhance: {message}", "answer": rewrites[-1]})
    valid = 0
    for prompt, schema in JSON_TASKS:
        for _ in range(runs):
            result = await ask([SYSTEM, ChatMessage("user", prompt)], json_schema=schema)
            with contextlib.suppress(json.JSONDecodeError):
                valid += _valid(json.loads(result.text), schema)
            answers.append({"prompt": prompt, "answer": result.text})
    total = runs * len(PROMPTS)
    changed = sum(r.casefold() != m.casefold() for r, m in zip(rewrites, ENHANCE, strict=True))
    return {
        "label": config.label,
        "size_mb": round(chat.path.stat().st_size / 1e6),
        "load_s": round(load_s, 2),
        "tokens_per_s": round(statistics.median(rates), 1) if rates else None,
        "answers_at_cap": f"{at_cap}/{total}",
        "answers_with_a_loop": f"{looped}/{total}",
        "cut_by_guard": f"{stops}/{total}",
        "name_recalled": f"{recalled}/{runs}",
        "json_valid": f"{valid}/{runs * len(JSON_TASKS)}",
        "enhance_changed": f"{changed}/{len(ENHANCE)}",
        "answers": answers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.local_model")
    parser.add_argument("--gguf", type=Path, nargs="*", default=[], help="other GGUF files")
    parser.add_argument("--runs", type=int, default=2, help="times each prompt is asked")
    parser.add_argument("--out", type=Path, help="write every answer here (JSON)")
    args = parser.parse_args()
    configs = [
        Config("SmolLM2-135M, served defaults", None, local.SAMPLING),
        Config("SmolLM2-135M, sampling before (no penalty, no guard)", None, OLD_SAMPLING),
        *(Config(f"{path.name}, served defaults", path, local.SAMPLING) for path in args.gguf),
    ]
    results = [asyncio.run(_run(config, args.runs)) for config in configs]
    columns = [k for k in results[0] if k not in ("label", "answers")]
    print("| configuration | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for result in results:
        print(f"| {result['label']} | " + " | ".join(str(result[c]) for c in columns) + " |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
