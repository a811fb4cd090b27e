"""Images from an OpenAI-compatible images API (`images.generate` / `images.edit`), as base64."""

from __future__ import annotations

import base64
from typing import Any

from sessionary.providers.base import ImageRequest, ImageResult
from sessionary.providers.party_transport import party_headers
from sessionary.providers.remote import LoopClients, require_model, upstream_errors
from sessionary.providers.settings import ProviderSettings
from sessionary.providers.telemetry import observed

SLOT = "IMAGES"


class OpenAIImages:
    def __init__(self, settings: ProviderSettings) -> None:
        self.clients = LoopClients(settings, SLOT)
        self.name = require_model(settings, SLOT)
        self.label = f"openai ({self.clients.base_url})"
        self.timeout = settings.timeout_seconds

    def load(self) -> None:
        """Nothing to load: the weights live on the server."""

    def _options(self, request: ImageRequest) -> dict[str, Any]:
        options: dict[str, Any] = {"model": self.name, "prompt": request.prompt, "n": request.n}
        options["extra_headers"] = party_headers(request.party)
        for name, value in (
            ("size", request.size),
            ("quality", request.quality),
            ("output_format", request.output_format),
            ("background", request.background),
            ("output_compression", request.compression),
        ):
            if value is not None:
                options[name] = value
        if self.name.startswith("dall-e"):
            options["response_format"] = "b64_json"
        return options

    @staticmethod
    def _result(answer: Any, model: str) -> ImageResult:
        images = [item.b64_json for item in answer.data or [] if item.b64_json]
        revised = next((i.revised_prompt for i in answer.data or [] if i.revised_prompt), None)
        return ImageResult(b64_images=images, revised_prompt=revised, model=model)

    async def generate(self, request: ImageRequest) -> ImageResult:
        with observed("images", self.name), upstream_errors(self.label, self.timeout):
            answer = await self.clients.get().images.generate(**self._options(request))
        return self._result(answer, self.name)

    async def edit(self, request: ImageRequest, image_b64: str) -> ImageResult:
        image = ("image.png", base64.b64decode(image_b64), "image/png")
        with observed("images", self.name), upstream_errors(self.label, self.timeout):
            answer = await self.clients.get().images.edit(image=image, **self._options(request))
        return self._result(answer, self.name)


def create(settings: ProviderSettings) -> OpenAIImages:
    return OpenAIImages(settings)
