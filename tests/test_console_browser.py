"""The console in a real browser: Debian's chromium driven by Playwright, against a served
process. Every test saves a screenshot of each page it visits (tests/.screenshots/, ignored by
git) and fails on any error in the page's console."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import LiveServer, run_cli

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).parent / ".screenshots"
PAGES = ["", "playground", "sessions", "templates", "users", "keys", "usage", "models"]
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


class Site:
    def __init__(self, server: LiveServer, key: str, env: dict[str, str]) -> None:
        self.server = server
        self.url = server.base_url
        self.key = key
        self.env = env

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **params: Any) -> Any:
        answer = httpx.get(f"{self.url}{path}", params=params, headers=self.headers, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def link(self, *args: str) -> str:
        out = run_cli(["console-link", *args, "--base-url", self.url], self.env)
        return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    env = {
        "SESSIONARY_DATA_DIR": str(tmp_path_factory.mktemp("console") / "data"),
        "SESSIONARY_LOG_LEVEL": "WARNING",
        "SESSIONARY_PRELOAD_MODELS": "false",
    }
    key = next(line for line in run_cli(["init"], env).splitlines() if line.startswith("sk_sy_"))
    run_cli(["credits", "grant", "default", "1000"], env)
    server = LiveServer(env)
    try:
        yield Site(server, key, env)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


class Tab:
    """A page of a fresh browser context that remembers console errors and takes screenshots."""

    def __init__(self, browser: Any, name: str, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.name = name
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: d.accept())

    def shot(self, label: str) -> None:
        SHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{self.name}-{label}.png"), full_page=True)

    def sign_in(self, site: Site) -> None:
        self.page.goto(f"{site.url}/console")
        self.page.fill("#api_key", site.key)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"{site.url}/console")

    def close(self, expected_errors: int = 0) -> None:
        self.context.close()
        assert len(self.errors) == expected_errors, self.errors


@pytest.fixture
def tab(browser: Any, request: pytest.FixtureRequest) -> Iterator[Tab]:
    opened = Tab(browser, request.node.name, WIDE)
    yield opened
    opened.close()


def test_sign_in_with_a_key_then_sign_out(site: Site, tab: Tab) -> None:
    page = tab.page
    response = page.goto(f"{site.url}/console")
    assert page.url.endswith("/console/sign-in")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    tab.shot("sign-in")
    page.fill("#api_key", site.key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/console")
    balance = site.get("/v1/credits")["remainingCredits"]
    expect(page.locator("#balance")).to_have_text(f"{balance:,.0f}")
    assert page.locator("#chart svg").count() == 1
    tab.shot("overview")
    cookie = next(c for c in tab.context.cookies() if c["name"] == "sessionary_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("Object.keys(localStorage).length") == 0
    page.click("text=Sign out")
    page.wait_for_url(f"{site.url}/console/sign-in")
    # The session ended on the server: its cookie opens nothing any more.
    stale = httpx.get(f"{site.url}/v1/me", cookies={"sessionary_console": cookie["value"]})
    assert stale.status_code == 401


def test_a_wrong_key_is_refused_on_the_page(site: Site, tab: Tab) -> None:
    tab.page.goto(f"{site.url}/console/sign-in")
    tab.page.fill("#api_key", "sk_sy_" + "x" * 52)
    tab.page.click("button[type=submit]")
    assert "Invalid API key" in tab.page.locator(".error").inner_text()
    tab.shot("refused")
    tab.errors.clear()  # the 401 document itself is reported as a failed load


def test_one_time_link_signs_in_once(site: Site, browser: Any) -> None:
    url = site.link()
    first = Tab(browser, "link-first", WIDE)
    first.page.goto(url)
    first.page.wait_for_url(f"{site.url}/console")
    assert first.page.locator("nav.pages").is_visible()
    first.shot("overview")
    first.close()
    second = Tab(browser, "link-again", WIDE)
    answer = second.page.goto(url)
    assert answer.status == 401
    assert "already used" in second.page.locator(".error").inner_text()
    second.shot("refused")
    second.close(expected_errors=1)  # the browser logs the 401 of the document


def test_operator_link_switches_accounts(site: Site, tab: Tab) -> None:
    run_cli(["accounts", "create", "second"], site.env)
    tab.page.goto(site.link("--operator"))
    tab.page.wait_for_url(f"{site.url}/console")
    options = tab.page.locator("#account-switch option")
    assert options.count() >= 2
    second = tab.page.locator("#account-switch option", has_text="second").get_attribute("value")
    tab.page.select_option("#account-switch", second)
    tab.page.click(".switch button")
    expect(tab.page.locator("body")).to_have_attribute("data-account", second or "")
    expect(tab.page.locator("#balance")).to_have_text("0")
    tab.shot("operator")


def test_playground_streams_an_answer(site: Site, tab: Tab) -> None:
    tab.sign_in(site)
    page = tab.page
    page.goto(f"{site.url}/console/playground")
    page.wait_for_selector("#model option", state="attached")
    page.fill("#max-tokens", "12")
    page.fill("#message", "Say hello.")
    page.click("#send")
    answer = page.locator(".transcript li.assistant[data-charged]")
    answer.wait_for(timeout=120_000)
    assert answer.locator(".text").inner_text().strip()
    assert Decimal(answer.get_attribute("data-charged") or "0") > 0
    assert "credits charged" in page.locator("#turn-cost").inner_text()
    tab.shot("playground")
    # The session now exists and its transcript shows the turn.
    page.goto(f"{site.url}/console/sessions")
    page.locator("#list li button").first.click()
    page.wait_for_selector("#transcript li.user")
    assert "Say hello." in page.locator("#transcript").inner_text()
    tab.shot("sessions")


def test_csv_upload_then_search_with_filters(site: Site, tab: Tab, tmp_path: Path) -> None:
    colours = ["red", "blue", "green"]
    lines = ["id,title,colour,price"]
    lines += [
        f'{i},"{colours[i % 3]} shoe, model {i}",{colours[i % 3]},{10 + i}' for i in range(120)
    ]
    upload = tmp_path / "shoes.csv"
    upload.write_text("\n".join(lines) + "\n")
    tab.sign_in(site)
    page = tab.page
    page.goto(f"{site.url}/console/templates")
    page.set_input_files("#file", str(upload))
    page.fill("#name", "shoes")
    page.click("#upload button[type=submit]")
    expect(page.locator("#progress-text")).to_have_text(
        "120 of 120 records embedded.", timeout=120_000
    )
    assert page.locator("#progress").get_attribute("value") == "100"
    page.wait_for_selector("#schema td:has-text('colour')")
    tab.shot("schema")
    page.fill("#term", "red shoes")
    page.click("#search button[type=submit]")
    page.wait_for_selector("#results li")
    chip = page.locator(".chip[data-field='colour'] input")
    assert "red" in chip.input_value()
    assert "results in" in page.locator("#took").inner_text()
    assert page.locator("#results li").count() == 10
    assert all("red" in t for t in page.locator("#results pre").all_inner_texts())
    tab.shot("search")


def test_grant_credits_to_an_external_user(site: Site, tab: Tab) -> None:
    tab.sign_in(site)
    page = tab.page
    page.goto(f"{site.url}/console/users")
    page.fill("#unique-key", "alice")
    page.click("#create button[type=submit]")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.locator("#detail-balance").inner_text() == "0"
    page.fill("#grant-credits", "25")
    page.click("#grant button[type=submit]")
    expect(page.locator("#detail-balance")).to_have_text("25")
    users = site.get("/v1/external_users")["data"]
    assert next(u for u in users if u["unique_key"] == "alice")["generation_credits"] == 25
    tab.shot("users")


def test_create_then_revoke_a_key(site: Site, tab: Tab) -> None:
    tab.sign_in(site)
    page = tab.page
    page.goto(f"{site.url}/console/keys")
    page.fill("#key-name", "ci")
    page.click("#create button[type=submit]")
    new_key = page.locator("#new-key-value").inner_text()
    assert new_key.startswith("sk_sy_")
    me = httpx.get(f"{site.url}/v1/me", headers={"Authorization": f"Bearer {new_key}"})
    assert me.status_code == 200
    tab.shot("created")
    row = page.locator("#keys tr", has_text=new_key[:18])
    row.locator("button:has-text('Revoke')").click()
    row.locator("text=revoked").wait_for()
    me = httpx.get(f"{site.url}/v1/me", headers={"Authorization": f"Bearer {new_key}"})
    assert me.status_code == 401
    tab.shot("revoked")


def test_usage_page_equals_the_ledger(site: Site, tab: Tab) -> None:
    spent = httpx.post(
        f"{site.url}/v1/embeddings", json={"input": "a few words"}, headers=site.headers
    )
    assert spent.status_code == 200
    total = Decimal(0)
    after = None
    while True:
        page_ = site.get("/v1/credits/ledger", kind="charge", limit=100, owner="account",
                         **({"after": after} if after else {}))  # fmt: skip
        total += sum(-Decimal(str(e["credits"])) for e in page_["data"])
        if not page_["has_more"]:
            break
        after = page_["last_id"]
    assert total > 0
    tab.sign_in(site)
    page = tab.page
    page.goto(f"{site.url}/console/usage")
    page.fill("#owner", "account")
    page.click("#filters button[type=submit]")
    # The CSV link changes only when the filtered ledger has been drawn.
    expect(page.locator("#csv")).to_have_attribute("href", re.compile(r"owner=account.*format=csv"))
    expect(page.locator("#total-credits")).to_have_attribute("data-exact", str(total))
    page.wait_for_selector("#ledger tbody tr td")
    assert page.locator("#by-day svg rect.bar").count() >= 30
    tab.shot("usage")


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1280", "390"])
def test_every_page_fits_and_works_by_keyboard(
    site: Site, browser: Any, viewport: dict[str, int]
) -> None:
    tab = Tab(browser, f"pages-{viewport['width']}", viewport)
    page = tab.page
    page.goto(f"{site.url}/console/sign-in")
    # The key field has autofocus, which Chromium applies on a later frame than "load":
    # wait for it rather than pressing Tab, which could race it and move past the field.
    page.wait_for_function("document.activeElement.id === 'api_key'")
    page.keyboard.type(site.key)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{site.url}/console")
    for slug in PAGES:
        page.goto(f"{site.url}/console/{slug}".rstrip("/"))
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"] + 1, (slug, width)
        tab.shot(slug or "overview")
    # Keyboard: the skip link comes first and the navigation is reachable by Tab.
    page.goto(f"{site.url}/console/keys")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == "/console/usage":
            break
    page.keyboard.press("Enter")
    page.wait_for_url(f"{site.url}/console/usage")
    tab.close()


URL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+[^\s"'`)]*""")
# XML namespace names identify a vocabulary; nothing is fetched from them.
NAMESPACES = {"http://www.w3.org/2000/svg"}


def test_no_page_or_asset_names_another_host(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=30) as client:
        signed = client.post("/console/sign-in", data={"api_key": site.key})
        assert signed.status_code == 303
        seen: dict[str, str] = {}
        for slug in [*PAGES, "sign-in"]:
            answer = client.get(f"/console/{slug}".rstrip("/"))
            assert answer.status_code == 200
            seen[slug or "overview"] = answer.text
            assets = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', answer.text)
            for asset in assets:
                seen[asset] = client.get(asset).text
        static = Path(__file__).parents[1] / "src/sessionary/console/static"
        for path in static.iterdir():
            seen[path.name] = path.read_text()
    assert any(name.endswith(".js") for name in seen) and any(n.endswith(".css") for n in seen)
    foreign = {
        (name, found)
        for name, text in seen.items()
        for found in URL.findall(text)
        if found not in NAMESPACES and not found.startswith(("//", "http://127.0.0.1"))
    }
    # Protocol-relative references (//host) would also leave the server.
    foreign |= {
        (name, m)
        for name, text in seen.items()
        for m in re.findall(r"""["'(]//[A-Za-z0-9.-]+""", text)
    }
    assert foreign == set()


def test_screenshots_folder_is_ignored_by_git() -> None:
    ignore = (Path(__file__).parents[1] / ".gitignore").read_text()
    assert "tests/.screenshots/" in ignore
