"""One settings object for the whole server, read from `SESSIONARY_*` environment variables.

Nested groups use `__` (for example `SESSIONARY_LLM__PROVIDER`), so every knob has one name in
the environment, in a `.env` file and in code.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sessionary.settings.files import FileInputSettings
from sessionary.settings.pricing import PricingSettings
from sessionary.settings.providers import LOCAL_MAX_OUTPUT_TOKENS, ProviderSettings
from sessionary.settings.search import SearchSettings


class CorsSettings(BaseModel):
    """`SESSIONARY_CORS__ORIGINS='["https://app.example"]'`: pages allowed to call the API.

    Browsers authenticate with a bearer (a ChatKit client secret, an auth token), never with
    cookies, so credentials are never allowed, and `*` is accepted only for that reason.
    """

    origins: list[str] = Field(default_factory=list, max_length=100)
    max_age_seconds: int = Field(default=600, ge=0, le=86_400)

    @field_validator("origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"'{origin}' is not an origin (scheme://host[:port]) or '*'")
            if origin != "*" and origin.rstrip("/") != origin:
                raise ValueError(f"'{origin}': an origin has no path, not even '/'")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SESSIONARY_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    data_dir: Path = Field(
        default=Path(".sessionary"),
        description="Where the embedded SQLite database and other local state live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means SQLite in data_dir. "
        "Use postgresql+psycopg://user:pass@host/db for PostgreSQL.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_base_url: str | None = Field(
        default=None, description="Base URL printed for clients (defaults to http://host:port)."
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="Requests with a larger body get 413."
    )
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    db_pool_size: int = Field(
        default=5,
        ge=1,
        description="Connections kept per pool; a process has one pool on SQLite, two on "
        "PostgreSQL (keep workers x (2 x (pool + overflow) + db_threads) under its "
        "max_connections).",
    )
    db_max_overflow: int = Field(default=10, ge=0)
    db_threads: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Worker threads per process that run the short database work of turns, "
        "searches and key checks at once; more only contend for the GIL and the database.",
    )
    log_level: str = "INFO"
    log_json: bool | Literal["auto"] = Field(
        default="auto",
        description="JSON log lines (true), readable lines (false), or auto: readable on a "
        "terminal, JSON otherwise.",
    )
    login_token_ttl_seconds: int = Field(
        default=600,
        ge=10,
        le=86_400,
        description="How long a login token may be exchanged (once) for an auth token.",
    )
    auth_token_ttl_seconds: int = Field(
        default=86_400,
        ge=60,
        description="How long an auth token (from a login token) stays valid unless revoked.",
    )
    login_url: str | None = Field(
        default=None,
        description="Template of the loginUrl answered with a login token, with {token} and "
        "{redirect}; by default this server's /users/verify_token?loginToken={token}.",
    )
    auth_cache_seconds: float = Field(
        default=5,
        ge=0,
        le=3600,
        description="PostgreSQL: how long a server process may keep a key it checked and an "
        "account's prompt; every process drops them at once when the database reports a change "
        "(0: read them on every request).",
    )
    key_touch_interval_seconds: int = Field(
        default=60,
        ge=0,
        description="API keys' last_used_at is written at most this often, "
        "so reads do not turn into writes.",
    )

    idempotency_retention_hours: float = Field(
        default=24, gt=0, description="How long a POST's answer is replayed to retries."
    )
    idempotency_lease_seconds: float = Field(
        default=600,
        gt=0,
        description="A request still running after this long is presumed dead; its key frees.",
    )
    idempotency_wait_seconds: float = Field(
        default=10,
        ge=0,
        description="A retry arriving while the first is running waits this long for its answer, "
        "then gets 409.",
    )
    shutdown_grace_seconds: int = Field(
        default=30,
        gt=0,
        le=86400,
        description="`sessionary serve` on SIGTERM or Ctrl-C: how long requests still running "
        "(streams) may go on; then they are cancelled, each charged what it delivered and its "
        "hold given back (a request cut before its answer gets a 503). Background responses "
        "get as long again once the requests have ended.",
    )
    reservation_ttl_seconds: int = Field(
        default=900,
        gt=0,
        description="An unsettled credit reservation (its process died) returns after this long.",
    )
    stream_write_timeout_seconds: float = Field(
        default=30,
        gt=0,
        description="A streamed answer whose client reads nothing for this long is closed and "
        "billed for what was produced.",
    )
    background_heartbeat_seconds: float = Field(
        default=5,
        gt=0,
        le=300,
        description="How often a process says its background responses are still running; one "
        "not heard of for three of these is failed and its hold released (its process died).",
    )
    background_events_retention_seconds: int = Field(
        default=600,
        ge=0,
        description="How long a background response's events stay replayable "
        "(GET /v1/responses/{id}?stream=true) after they were produced, once it has ended.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for /metrics; unset: /metrics answers loopback clients only.",
    )
    cors: CorsSettings = Field(default_factory=lambda: CorsSettings())
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    llm: ProviderSettings = Field(default_factory=lambda: ProviderSettings(provider="local"))
    embeddings: ProviderSettings = Field(default_factory=lambda: ProviderSettings(provider="local"))
    images: ProviderSettings = Field(default_factory=lambda: ProviderSettings(provider="none"))

    @field_validator("llm", "embeddings", "images", mode="before")
    @classmethod
    def _slot_keeps_its_provider(cls, value: object, info: ValidationInfo) -> object:
        """`SESSIONARY_EMBEDDINGS__N_THREADS=2` alone tunes the default provider: without
        this, the slot's settings were that one key, and the server refused to start for want
        of `..._PROVIDER`."""
        if isinstance(value, dict) and "provider" not in value and info.field_name:
            default = cls.model_fields[info.field_name].get_default(call_default_factory=True)
            return {"provider": default.provider, **value}
        return value

    default_max_output_tokens: int = Field(
        default=1024,
        ge=1,
        description="Output cap of an assistant turn that names none (also its credit hold); "
        f"{LOCAL_MAX_OUTPUT_TOKENS} when unset and the chat model is the local one.",
    )
    search_exact_limit: int = Field(
        default=20_000,
        ge=0,
        description="PostgreSQL scores templates of up to this many records exactly; beyond, it "
        "uses HNSW (iterative scans), and exact scoring when a filter leaves the scan short.",
    )
    search: SearchSettings = Field(default_factory=SearchSettings)
    files: FileInputSettings = Field(default_factory=FileInputSettings)
    preload_models: bool = Field(
        default=True,
        description="Load model weights at startup (false: on first use).",
    )
    init_credits: Decimal = Field(
        default=Decimal(1000),
        ge=0,
        description="Credits granted to the default account that `sessionary init` creates.",
    )

    @model_validator(mode="after")
    def _local_output_cap(self) -> Settings:
        """The local model gets its own, smaller default cap; an explicit setting still wins."""
        explicit = "default_max_output_tokens" in self.model_fields_set
        if not explicit and self.llm.provider == "local":
            self.default_max_output_tokens = LOCAL_MAX_OUTPUT_TOKENS
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The effective database URL, with the psycopg 3 driver for plain PostgreSQL URLs."""
        if not self.database_url:
            return f"sqlite:///{(self.data_dir / 'sessionary.db').resolve()}"
        url = self.database_url
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; explicit overrides win (tests and the CLI use them)."""
    return Settings(**overrides)  # type: ignore[arg-type]
