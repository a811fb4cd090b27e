from __future__ import annotations

from pathlib import Path

from sessionary.accounts.keys import (
    ACCOUNT_KEY_TYPE,
    LOOKUP_LENGTH,
    SECRET_LENGTH,
    generate_key,
    hash_key,
    key_matches,
    prefix_of,
)
from sessionary.config import Settings


def test_generated_keys_are_unique_well_formed_and_hashed() -> None:
    keys = [generate_key() for _ in range(200)]
    assert len({k.plaintext for k in keys}) == 200
    for key in keys:
        assert key.plaintext.startswith(ACCOUNT_KEY_TYPE)
        assert len(key.plaintext) == len(ACCOUNT_KEY_TYPE) + LOOKUP_LENGTH + SECRET_LENGTH
        assert prefix_of(key.plaintext) == key.prefix
        assert key.key_hash == hash_key(key.plaintext) != key.plaintext
        assert key.plaintext[len(key.prefix) :] not in key.prefix
        assert key_matches(key.plaintext, key.key_hash)
        assert not key_matches(key.plaintext[:-1] + "x", key.key_hash) or key.plaintext[-1] == "x"


def test_prefix_of_rejects_what_cannot_be_a_key() -> None:
    good = generate_key().plaintext
    assert prefix_of(good[:-1]) is None
    assert prefix_of(good + "a") is None
    assert prefix_of("sk-" + good[3:]) is None
    assert prefix_of(good[:-1] + "!") is None
    assert prefix_of("") is None


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "state")
    assert settings.is_sqlite
    assert settings.sqlalchemy_url == f"sqlite:///{(tmp_path / 'state' / 'sessionary.db')}"


def test_plain_postgres_urls_get_the_psycopg_driver() -> None:
    assert Settings(database_url="postgresql://u:p@h/db").sqlalchemy_url == (
        "postgresql+psycopg://u:p@h/db"
    )
    assert Settings(database_url="postgres://h/db").sqlalchemy_url == "postgresql+psycopg://h/db"
    assert not Settings(database_url="postgres://h/db").is_sqlite


def test_a_copy_with_another_database_url_connects_there(tmp_path: Path) -> None:
    """The effective URL follows the copy's `database_url`, not the original's, even once the
    original's was read (it was cached, and a copy kept the original's database)."""
    original = Settings(data_dir=tmp_path, database_url="postgresql://a@h/one")
    assert original.sqlalchemy_url == "postgresql+psycopg://a@h/one"
    copy = original.model_copy(update={"database_url": "postgresql://b@h/two"})
    assert copy.sqlalchemy_url == "postgresql+psycopg://b@h/two"
    assert not original.model_copy(update={"database_url": None}).sqlalchemy_url.startswith("post")


def test_settings_read_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SESSIONARY_PORT", "9123")
    monkeypatch.setenv("SESSIONARY_MAX_BODY_BYTES", "2048")
    settings = Settings()
    assert settings.port == 9123
    assert settings.max_body_bytes == 2048
    assert settings.base_url == "http://127.0.0.1:9123"


def test_one_provider_setting_alone_tunes_the_slots_default(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`SESSIONARY_EMBEDDINGS__N_THREADS=2` alone: the slot keeps its default provider (the
    server used to refuse to start, asking for `SESSIONARY_EMBEDDINGS__PROVIDER`)."""
    monkeypatch.setenv("SESSIONARY_EMBEDDINGS__N_THREADS", "2")
    monkeypatch.setenv("SESSIONARY_IMAGES__TIMEOUT_SECONDS", "5")
    settings = Settings()
    assert (settings.embeddings.provider, settings.embeddings.n_threads) == ("local", 2)
    assert (settings.images.provider, settings.images.timeout_seconds) == ("none", 5)
    assert settings.llm.provider == "local"
    monkeypatch.setenv("SESSIONARY_EMBEDDINGS__PROVIDER", "openai")
    assert Settings().embeddings.provider == "openai"
