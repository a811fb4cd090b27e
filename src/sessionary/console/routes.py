"""The console's pages, sign-in and sign-out. Pages are shells: their data comes from the public
API, which the page's script calls with the session cookie and the CSRF header."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from sessionary import __version__
from sessionary.console.limits import SignInLimiter
from sessionary.console.schemas import SessionForm, SignInForm
from sessionary.console.service import COOKIE, SESSION_TTL, ConsoleService, Opened, csrf_token
from sessionary.kit.dependencies import DbSession, WriteDbSession
from sessionary.kit.errors import ApiError, Forbidden, InvalidRequest

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

PAGES = (
    ("", "Overview"),
    ("playground", "Playground"),
    ("sessions", "Sessions"),
    ("templates", "Search templates"),
    ("users", "External users"),
    ("keys", "Keys"),
    ("usage", "Usage and credits"),
    ("models", "Models and health"),
)
PAGE_NAMES = {slug: title for slug, title in PAGES}
MAX_FORM_BYTES = 4096


async def form_fields(request: Request) -> dict[str, str]:
    """A small urlencoded form (sign-in, sign-out): first value of each field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequest("Form too large.")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


Form = Annotated[dict[str, str], Depends(form_fields)]


def limiter(request: Request) -> SignInLimiter:
    found: SignInLimiter = request.app.state.console_limiter
    return found


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def same_origin(request: Request) -> None:
    """A sign-in or sign-out form must come from a page of this server (no login CSRF)."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if (site is not None and site not in ("same-origin", "none")) or (
        origin is not None and origin != own
    ):
        raise Forbidden("Sign-in forms are accepted from this server's own pages only.")


def sign_in_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    headers = {}
    if status == 429:
        headers["retry-after"] = str(limiter(request).retry_after(client_of(request)))
    return templates.TemplateResponse(
        request,
        "sign_in.html",
        {"error": error, "version": __version__},
        status_code=status,
        headers=headers,
    )


def signed_in(request: Request, opened: Opened) -> Response:
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        COOKIE,
        opened.token,
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _attempt(request: Request, attempt: Any) -> Response:
    """Run one sign-in attempt under the rate limit; a refusal is the sign-in page again."""
    client = client_of(request)
    if limiter(request).retry_after(client):
        return sign_in_page(request, "Too many failed sign-ins: wait a few minutes.", 429)
    try:
        opened: Opened = attempt()
    except ApiError as exc:
        limiter(request).failed(client)
        return sign_in_page(request, exc.message, exc.status_code)
    return signed_in(request, opened)


@router.get("/sign-in")
def sign_in_form(request: Request) -> Response:
    return sign_in_page(request)


@router.post("/sign-in")
def sign_in(request: Request, db: DbSession, form: Form) -> Response:
    same_origin(request)
    key = SignInForm.model_validate(form).api_key
    if not key:
        return sign_in_page(request, "Enter an account API key.", 400)
    return _attempt(request, lambda: ConsoleService(db).sign_in(key))


@router.get("/link/{token}")
def sign_in_with_link(token: str, request: Request, db: WriteDbSession) -> Response:
    """Jupyter's token URL: the link printed on the server's machine opens a session once."""
    if len(token) > 100:
        return sign_in_page(request, "This sign-in link is malformed.", 400)
    return _attempt(request, lambda: ConsoleService(db).redeem_link(token))


def _checked_session(request: Request, form: dict[str, str]) -> tuple[str, SessionForm]:
    same_origin(request)
    token = request.cookies.get(COOKIE, "")
    fields = SessionForm.model_validate(form)
    if not token or fields.csrf_token != csrf_token(token):
        raise Forbidden("Missing or wrong CSRF token.", code="csrf_failed")
    return token, fields


@router.post("/sign-out")
def sign_out(request: Request, db: DbSession, form: Form) -> Response:
    token, _ = _checked_session(request, form)
    ConsoleService(db).sign_out(token)
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.post("/account")
def switch_account(request: Request, db: DbSession, form: Form) -> Response:
    token, fields = _checked_session(request, form)
    ConsoleService(db).switch_account(token, fields.account_id)
    return RedirectResponse(fields.next_page, status_code=303)


def page(request: Request, db: Any, slug: str) -> Response:
    token = request.cookies.get(COOKIE, "")
    service = ConsoleService(db)
    row = service.find(token) if token else None
    if row is None:
        return RedirectResponse("/console/sign-in", status_code=303)
    accounts = service.accounts_for(row)
    current = next((a for a in accounts if a.id == row.account_id), accounts[0])
    context = {
        "page": slug or "overview",
        "title": PAGE_NAMES[slug],
        "pages": PAGES,
        "csrf": csrf_token(token),
        "account": current,
        "accounts": accounts,
        "operator": row.operator,
        "version": __version__,
        "path": request.url.path,
    }
    return templates.TemplateResponse(request, f"{slug or 'overview'}.html", context)


@router.get("")
def overview(request: Request, db: DbSession) -> Response:
    return page(request, db, "")


@router.get("/{slug}")
def other_page(slug: str, request: Request, db: DbSession) -> Response:
    if slug not in PAGE_NAMES or not slug:
        return templates.TemplateResponse(
            request, "not_found.html", {"version": __version__}, status_code=404
        )
    return page(request, db, slug)
