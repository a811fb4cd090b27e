"""The server root and the API reference work on a laptop with no network: every page and every
asset they load comes from the server itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sessionary import __version__
from sessionary.app import create_app
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.migrate import upgrade

ORIGIN = "http://testserver"
# What makes a browser fetch something: attributes of tags, and url()/@import inside CSS or JS.
FETCHING_CSS = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])(https?:)?//""")  # CSS is lower case


class Assets(HTMLParser):
    """Every src/href of a page, and the text of its inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.references += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data: str) -> None:
        self.inline.append(data)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    data = Path(tmp_path_factory.mktemp("front")) / "data"
    settings = Settings(data_dir=data, log_level="WARNING", preload_models=False)
    db = Database(settings)
    upgrade(db)
    yield create_app(settings)
    db.dispose()


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def parsed(client: TestClient, path: str) -> Assets:
    answer = client.get(path, headers={"Accept": "text/html"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    page = Assets()
    page.feed(answer.text)
    return page


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_pages_load_nothing_from_another_host(client: TestClient, path: str) -> None:
    page = parsed(client, path)
    external = [r for r in page.references if re.match(r"(https?:)?//", r)]
    assert [r for r in external if not r.startswith(ORIGIN)] == []
    assert not FETCHING_CSS.search("".join(page.inline))
    for reference in page.references:
        if reference.startswith("#"):
            continue
        asset = client.get(reference.removeprefix(ORIGIN))
        assert asset.status_code == 200, reference
        if reference.endswith((".css", ".js")):
            assert not FETCHING_CSS.search(asset.text), reference


def test_docs_scripts_come_from_the_installed_package(client: TestClient) -> None:
    swagger = parsed(client, "/docs")
    scripts = [r for r in swagger.references if r.endswith(".js")]
    assert scripts == ["/docs/assets/swagger-ui-bundle.js"]
    assert len(client.get(scripts[0]).content) > 500_000  # the real Swagger UI, not a stub
    # No validator badge: Swagger UI would fetch it from validator.swagger.io.
    assert '"validatorUrl": null' in "".join(swagger.inline)
    redoc = parsed(client, "/redoc")
    assert "/docs/assets/redoc.standalone.js" in redoc.references
    assert not any("fonts.googleapis" in r for r in redoc.references)


def test_front_door_names_version_base_url_and_links(client: TestClient) -> None:
    page = parsed(client, "/")
    text = "".join(page.inline)
    assert __version__ in text
    assert f"{ORIGIN}/v1" in text
    assert {"/docs", "/redoc", "/healthz", "/readyz", "/openapi.json"} <= set(page.references)
    assert "/console" not in page.references  # not served (yet): not linked


def test_front_door_answers_json_when_asked(client: TestClient) -> None:
    answer = client.get("/", headers={"Accept": "application/json"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["version"] == __version__
    assert body["base_url"] == f"{ORIGIN}/v1"
    assert body["links"]["docs"] == "/docs" and body["links"]["health"] == "/healthz"
    for path in body["links"].values():
        assert client.get(path).status_code == 200, path


def test_front_door_uses_the_public_base_url_and_links_a_console(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        public_base_url="https://api.example.org/",
        log_level="WARNING",
        preload_models=False,
    )
    db = Database(settings)
    upgrade(db)
    app = create_app(settings)
    app.add_api_route("/console", lambda: {"console": True}, include_in_schema=False)
    try:
        with TestClient(app) as client:
            body = client.get("/", headers={"Accept": "application/json"}).json()
            assert body["base_url"] == "https://api.example.org/v1"
            assert body["links"]["console"] == "/console"
            assert "/console" in parsed(client, "/").references
    finally:
        db.dispose()


def test_new_pages_stay_out_of_the_api_document(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert not paths & {"/", "/docs", "/redoc"}
    assert not any(p.startswith("/docs/") for p in paths)
