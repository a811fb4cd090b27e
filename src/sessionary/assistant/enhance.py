"""`/chat/enhance`: rewrite a message keeping its intent, in a chosen language and length."""

from __future__ import annotations

import re
from typing import Any

from sessionary.kit.errors import InvalidRequest
from sessionary.providers.base import ChatMessage, ChatModel, ChatRequest

ISO_639_1 = {
    "ar": "Arabic", "bn": "Bengali", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "fa": "Persian", "fi": "Finnish",
    "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "ms": "Malay", "nb": "Norwegian",
    "nl": "Dutch", "nn": "Norwegian", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "th": "Thai", "tr": "Turkish",
    "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip
DEFAULT_MAX_WORDS = 120
FRAME = "Rewrite this message to be clearer and more engaging:\n\n"


def language_name(value: str | None) -> str | None:
    """An ISO 639-1 code or a language name; None means: keep the message's own language."""
    if value is None or not value.strip() or value.strip().lower() == "auto":
        return None
    text = value.strip()
    code = text.lower().split("-")[0].split("_")[0]
    if code in ISO_639_1:
        return ISO_639_1[code]
    if text.replace(" ", "").isalpha() and len(text) > 2:
        return text.title()
    raise InvalidRequest(
        f"Unknown language '{value}': use an ISO 639-1 code (such as 'fr') or a name.",
        param="language",
    )


def enhance_request(
    message: Any,
    language: str | None,
    maxwords: int | None,
    metadata: dict[str, Any] | None,
    party: str = "",
) -> tuple[ChatRequest, int]:
    if not isinstance(message, str) or not message.strip():
        raise InvalidRequest("'message' must be a non-empty string.", param="message")
    if len(message) > 20_000:
        raise InvalidRequest("'message' is longer than 20000 characters.", param="message")
    words = maxwords or DEFAULT_MAX_WORDS
    # The message is framed as the thing to rewrite, not as a message to answer: a small model
    # given the bare message echoes it or replies to it (measured on the bundled SmolLM2).
    rules = [
        "You rewrite messages: clearer and more engaging, with the same meaning and intent.",
        f"Use at most {words} words.",
        "Reply with the rewritten message only: no preamble, no quotes, no explanation.",
    ]
    target = language_name(language)
    if target:
        rules.append(f"Write it in {target}.")
    if metadata:
        context = ", ".join(f"{k}: {v}" for k, v in list(metadata.items())[:16])
        rules.append(f"Context: {context}.")
    request = ChatRequest(
        [
            ChatMessage("system", " ".join(rules)),
            ChatMessage("user", FRAME + message.strip()),
        ],
        max_output_tokens=min(words * 3 + 16, 4096),
        temperature=0.3,
        party=party,
    )
    return request, words


SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
PREAMBLE = re.compile(r"^(here(?:'s| is)|sure|rewritten|revised|enhanced)\b[^\n]*:\s*$", re.I)


def _key(sentence: str) -> str:
    return re.sub(r"[\W_]+", " ", sentence.casefold()).strip()


def one_message(text: str) -> str:
    """The rewrite once: a small model often adds a preamble or says the same sentence again and
    again. Ends at the first sentence seen before (or a truncated start of one)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > 1 and PREAMBLE.match(lines[0]):
        lines = lines[1:]
    kept: list[str] = []
    seen: list[str] = []
    for line in lines:
        sentences: list[str] = []
        for sentence in SENTENCE_END.split(line):
            key = _key(sentence)
            if key and any(earlier.startswith(key) for earlier in seen):
                return "\n".join([*kept, " ".join(sentences)]).strip()
            seen.append(key)
            sentences.append(sentence.strip())
        kept.append(" ".join(sentences))
    return "\n".join(kept)


def tidy(text: str, max_words: int) -> str:
    cleaned = one_message(text).strip().strip('"').strip("“”").strip()
    words = cleaned.split()
    return " ".join(words[:max_words]) if len(words) > max_words else cleaned


async def enhance(chat: ChatModel, request: ChatRequest, max_words: int) -> str:
    result = await chat.generate(request)
    return tidy(result.text, max_words) or request.messages[-1].text.removeprefix(FRAME)
