"""The ASGI app: Slack's requests, the browser's login and callback, and a health check.

The only module that imports the web framework.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from slack_bolt import BoltResponse
from slack_bolt.adapter.starlette.async_handler import to_starlette_response
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.domain import AttemptProblem, DatabaseDown, LinkError, LoginLinkProblem
from bot.limits import RequestLimits
from bot.links import Callback, LoginFlow, LoginPreview
from bot.logs import escape_controls
from bot.messages import (
    CONTINUE_ADVICE,
    LINKED_DETAILS,
    LINKED_TITLE,
    PAGE_BRAND,
    continue_button,
    continue_steps,
    continue_title,
    describe_on_page,
    linked_summary,
)
from bot.slack_requests import MalformedRequest, normalise

log = logging.getLogger(__name__)
access_log = logging.getLogger("vcc.access")

BROWSER_COOKIE = "vcc_browser"
COOKIE_MAX_AGE = 600  # the login link's lifetime: the binding is useless after it
LOGIN_PREFIX = "/salesforce/login/"

# The pages are small and self-contained: no third-party resource, readable on a phone,
# and readable by a screen reader (one h1; the status said in words, the icon hidden).
# Colours meet WCAG AA on the white card: body text 17:1, headings and button at least 5:1.
_STYLE = """\
*{box-sizing:border-box}
html{color-scheme:light}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
padding:1rem;font:1rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",
sans-serif;color:#1d1c1d;background:#f4f5f7}
main{width:100%;max-width:34rem;padding:2rem 1.5rem;color:#1d1c1d;background:#ffffff;
border:1px solid #dddee1;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.06)}
.brand{margin:0 0 1.25rem;font-size:.875rem;font-weight:600;color:#5e5d60}
h1{display:flex;align-items:center;gap:.6rem;margin:0 0 1rem;font-size:1.375rem;
line-height:1.3;color:#1d1c1d}
h1 svg{flex:none;width:1.75rem;height:1.75rem}
.ok h1{color:#00704f}
.error h1{color:#b42318}
p{margin:.75rem 0;overflow-wrap:anywhere}
button{display:block;width:100%;min-height:48px;margin:1.5rem 0 0;padding:.75rem 1.25rem;
font:inherit;font-weight:600;color:#ffffff;background:#00704f;border:0;border-radius:8px;
cursor:pointer}
button:hover{color:#ffffff;background:#005c41}
button:focus-visible{outline:3px solid #0b57d0;outline-offset:3px}
@media (min-width:36rem){main{padding:2.5rem 3rem}}
"""

_ICONS = {  # drawn inline (no request); the heading's words carry the meaning
    "ok": '<circle cx="12" cy="12" r="12" fill="currentColor"/><path d="M6.8 12.4l3.4 3.4 '
    '7-7.2" fill="none" stroke="#fff" stroke-width="2.6" stroke-linecap="round" '
    'stroke-linejoin="round"/>',
    "error": '<circle cx="12" cy="12" r="12" fill="currentColor"/><path d="M12 6.5v7" '
    'stroke="#fff" stroke-width="2.6" stroke-linecap="round"/><circle cx="12" cy="17.4" '
    'r="1.5" fill="#fff"/>',
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · VCC</title>
<style>{style}</style></head>
<body><main class="{tone}"><p class="brand">{brand}</p>
<h1>{icon}{title}</h1>{paragraphs}</main>{script}</body></html>
"""

# What VCC's own OAuth window does once it is done. Browsers only let a script close a
# window that a script opened, so the page also says that the window can be closed.
CLOSE_SCRIPT = "window.close()"


def csp_source(source: str) -> str:
    """A CSP hash source allowing exactly this inline script or style."""
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


# The pages show results only: nothing loaded from elsewhere, no framing, no form posted
# except the continue page's own, nothing cached, and no Referer that could carry the
# callback's code elsewhere.
_CSP = {
    "default-src": "'none'",
    "style-src": csp_source(_STYLE),
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'none'",
}


def content_security_policy(**directives: str) -> str:
    """The pages' policy, with directives (script_src=...) added or replaced."""
    merged = {**_CSP, **{name.replace("_", "-"): v for name, v in directives.items()}}
    return "; ".join(f"{name} {value}" for name, value in merged.items())


_PROBLEM_STATUS = {
    AttemptProblem.UNKNOWN: 400,
    AttemptProblem.EXPIRED: 410,
    AttemptProblem.USED: 409,
    AttemptProblem.OTHER_BROWSER: 403,
    AttemptProblem.WITHDRAWN: 410,
}

_PAGE_HEADERS = {
    "Content-Security-Policy": content_security_policy(),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


def _render(
    title: str,
    paragraphs: tuple[str, ...],
    *,
    tone: str,
    status: int,
    form: str = "",
    script: str = "",
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    icon = _ICONS.get(tone, "")
    content = _PAGE.format(
        title=html.escape(title),
        style=_STYLE,
        tone=tone,
        brand=html.escape(PAGE_BRAND),
        icon=f'<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">{icon}</svg>'
        if icon
        else "",
        paragraphs="".join(f"<p>{html.escape(p)}</p>" for p in paragraphs) + form,
        script=f"<script>{script}</script>" if script else "",
    )
    headers = dict(headers or _PAGE_HEADERS)
    if script:
        headers["Content-Security-Policy"] += f"; script-src {csp_source(script)}"
    return HTMLResponse(content, status_code=status, headers=headers)


def page(
    title: str,
    *paragraphs: str,
    status: int = 200,
    ok: bool = True,
    script: str = "",
) -> HTMLResponse:
    """A result: done (`ok`) or failed, in a few plain paragraphs."""
    return _render(title, paragraphs, tone="ok" if ok else "error", status=status, script=script)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def continue_page(preview: LoginPreview) -> HTMLResponse:
    """The login link's page: one button, a POST, binds the browser and goes to Salesforce.

    Opening the link changes nothing, so a link scanner's GET or HEAD cannot use it up.
    """
    label = preview.environment.label
    form = (
        f'<form method="post"><button type="submit">{html.escape(continue_button(label))}'
        "</button></form>"
    )
    # Browsers apply form-action to the redirect after the POST too: allow that host only.
    csp = content_security_policy(form_action=f"'self' {origin_of(preview.login_host)}")
    # Under no-referrer a browser sends the form's POST with "Origin: null" (Fetch standard,
    # "append a request Origin header"), which open_login refuses. same-origin still sends
    # no Referer, so not the link's token, to Salesforce.
    headers = {**_PAGE_HEADERS, "Content-Security-Policy": csp, "Referrer-Policy": "same-origin"}
    return _render(
        continue_title(preview.account_id),
        (continue_steps(label), CONTINUE_ADVICE),
        tone="step",
        status=200,
        form=form,
        headers=headers,
    )


def error_page(error: LinkError) -> HTMLResponse:
    title, detail = describe_on_page(error)
    status = 400
    if isinstance(error, LoginLinkProblem):
        status = _PROBLEM_STATUS[error.problem]
    elif isinstance(error, DatabaseDown):
        status = 503
    return page(title, detail, status=status, ok=False)


def is_ssl_check(body: bytes) -> bool:
    try:
        return dict(parse_qsl(body.decode("ascii"))).get("ssl_check") == "1"
    except UnicodeDecodeError:
        return False


def slack_signature_ok(verifier: SignatureVerifier, request: Request, body: bytes) -> bool:
    timestamp = request.headers.get("x-slack-request-timestamp", "")
    signature = request.headers.get("x-slack-signature", "")
    # slack_sdk raises on a timestamp that is not a number (isdigit alone accepts "²");
    # answer 401, not 500.
    if not (timestamp.isascii() and timestamp.isdigit()) or not signature:
        return False
    return verifier.is_valid(body=body, timestamp=timestamp, signature=signature)


# Acknowledged requests handed to bolt and not yet at their listener, at most.
EDGE_ACKS = 256


def bolt_get(request: Request) -> AsyncBoltRequest:
    return AsyncBoltRequest(
        body="",
        query=request.url.query,
        headers=request.headers,  # type: ignore[arg-type]
    )


def create_web_app(
    *,
    login: LoginFlow,
    public_url: str,
    ready: Callable[[], Awaitable[bool]],
    bolt: AsyncApp | None,
    signing_secret: str,
    cookie_secure: bool,
    background: Callable[[], Coroutine[Any, Any, None]] | None = None,
    startup: Callable[[], Coroutine[Any, Any, None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
    opening: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """The app. `startup` (learning who the bot is in Slack) starts with the app, without
    holding up the server: /healthz waits for it through `ready`; `background` (the health
    monitor) runs while the app is served; `shutdown` (finish work in flight, close
    clients) runs when it stops."""
    verifier = SignatureVerifier(signing_secret)
    public_origin = origin_of(public_url)
    dispatching: set[asyncio.Task[None]] = set()  # acknowledged, in bolt's hands

    async def slack_events(request: Request) -> Response:
        body = await request.body()
        if not slack_signature_ok(verifier, request, body):
            if is_ssl_check(body):
                # Slack checks the certificate with an unsigned POST and wants a 200,
                # as bolt's own SslCheck middleware answers (api.slack.com/interactivity/
                # slash-commands#ssl). Nothing is done with it.
                return Response(status_code=200)
            return JSONResponse({"error": "invalid request signature"}, status_code=401)
        try:
            normalised = normalise(body, request.headers.get("content-type", ""))
        except MalformedRequest as exc:
            return JSONResponse({"error": f"malformed request: {exc}"}, status_code=400)
        assert bolt is not None
        bolt_request = AsyncBoltRequest(
            body=normalised.body,
            query=request.query_params,  # type: ignore[arg-type]
            headers=request.headers,  # type: ignore[arg-type]
        )
        if normalised.empty_ack and len(dispatching) < EDGE_ACKS:
            # Slack only needs a 200 (within 3 s): say it now, and let bolt run the
            # listener behind it. The ack then waits neither for bolt's 10 ms polling nor
            # for the event loop's other work. Beyond EDGE_ACKS in flight, requests go
            # through bolt in line, which slows the sender instead of queueing without end.
            task = asyncio.create_task(dispatch(bolt_request))
            dispatching.add(task)
            task.add_done_callback(dispatching.discard)
            return Response(status_code=200)
        return to_starlette_response(await bolt.async_dispatch(bolt_request))

    async def dispatch(bolt_request: AsyncBoltRequest) -> None:
        assert bolt is not None
        try:
            answer = await bolt.async_dispatch(bolt_request)
        except Exception:  # bolt answers its own errors; this is a bug, logged
            log.exception("dispatching an acknowledged Slack request failed")
            return
        if answer.status >= 400:
            log.warning("bolt answered an acknowledged Slack request with %s", answer.status)

    async def show_login(request: Request) -> Response:
        try:
            preview = await login.preview(
                request.path_params["token"], request.cookies.get(BROWSER_COOKIE)
            )
        except LinkError as exc:
            return error_page(exc)
        return continue_page(preview)

    async def open_login(request: Request) -> Response:
        if request.headers.get("origin", "").lower() != public_origin:
            # Only our own page's button may bind a browser (cross-site request forgery).
            return page(
                "Use the button on the login page",
                "Open the login link from your Slack DM and click its button.",
                status=403,
                ok=False,
            )
        try:
            opened = await login.open(
                request.path_params["token"], request.cookies.get(BROWSER_COOKIE)
            )
        except LinkError as exc:
            return error_page(exc)
        response = RedirectResponse(
            opened.salesforce_url, status_code=303, headers={"Cache-Control": "no-store"}
        )
        response.set_cookie(
            BROWSER_COOKIE,
            opened.browser_secret,
            max_age=COOKIE_MAX_AGE,
            path="/salesforce/",
            httponly=True,
            samesite="lax",  # Salesforce's redirect back is a top-level GET: Lax sends it
            secure=cookie_secure,
        )
        return response

    async def callback(request: Request) -> Response:
        q = request.query_params
        try:
            result = await login.complete(
                Callback(
                    state=q.get("state"),
                    browser_secret=request.cookies.get(BROWSER_COOKIE),
                    code=q.get("code"),
                    error=q.get("error"),
                    error_description=q.get("error_description"),
                )
            )
        except LinkError as exc:
            return error_page(exc)
        view = result.account
        return page(
            LINKED_TITLE,
            linked_summary(view.account_id, view.org_id, view.sf_username),
            LINKED_DETAILS,
            script=CLOSE_SCRIPT,
        )

    async def healthz(_: Request) -> Response:
        try:
            ok = await asyncio.wait_for(ready(), timeout=5)
        except TimeoutError:
            ok = False
        if not ok:
            log.warning("health check failed: the database did not answer")
            return JSONResponse({"ok": False, "database": "unreachable"}, status_code=503)
        return JSONResponse({"ok": True, "database": "ok"})

    routes = [
        Route(f"{LOGIN_PREFIX}{{token}}", show_login, methods=["GET"]),
        Route(f"{LOGIN_PREFIX}{{token}}", open_login, methods=["POST"]),
        Route("/salesforce/callback", callback, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    if bolt is not None:
        routes.append(Route("/slack/events", slack_events, methods=["POST"]))
    oauth = bolt.oauth_flow if bolt is not None else None
    if oauth is not None:
        # Many workspaces: Slack's OAuth install, run by bolt's own flow. Its state lives
        # in the database, so an install started through one replica ends through any.

        async def slack_install(request: Request) -> Response:
            return oauth_response(await oauth.handle_installation(bolt_get(request)))

        async def slack_oauth_redirect(request: Request) -> Response:
            return oauth_response(await oauth.handle_callback(bolt_get(request)))

        def oauth_response(answer: BoltResponse) -> Response:
            headers = [
                (name, value)
                for name, values in answer.headers.items()
                for value in values
                if name.lower() not in ("content-length", "set-cookie")
            ]
            for cookie in answer.headers.get("set-cookie", []):
                # slack_sdk marks its state cookie Secure; on a loopback http PUBLIC_URL
                # (development) a browser would then never send it back.
                headers.append(
                    ("set-cookie", cookie if cookie_secure else cookie.replace("; Secure", ""))
                )
            response = Response(content=answer.body, status_code=answer.status)
            response.headers.update({"Cache-Control": "no-store"})
            response.raw_headers.extend((k.encode(), v.encode()) for k, v in headers)
            return response

        routes.append(Route(oauth.install_path, slack_install, methods=["GET"]))
        routes.append(Route(oauth.redirect_uri_path, slack_oauth_redirect, methods=["GET"]))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if opening is not None:  # before the first request (clients' shared sessions)
            await opening()
        tasks = [asyncio.create_task(work()) for work in (startup, background) if work]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            if dispatching:  # acknowledged requests still on their way to a listener
                await asyncio.wait(set(dispatching), timeout=10)
            if shutdown is not None:
                await shutdown()

    app = Starlette(routes=routes, lifespan=lifespan)
    # Inside AccessLog (added last), so that its refusals are logged too.
    app.add_middleware(RequestLimits, signed_paths={"/slack/events"} if bolt is not None else ())
    app.add_middleware(AccessLog)
    return app


def loggable_path(path: str) -> str:
    """The request path without its secrets (login tokens are cut, query strings never kept)
    and on one line: control characters, which arrive percent-decoded, are escaped."""
    if path.startswith(LOGIN_PREFIX):
        return LOGIN_PREFIX + "…"
    return escape_controls(path)


class AccessLog:
    """Replaces uvicorn's access log, which writes the callback's code and state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            access_log.info(
                "%s %s %s %.1fms",
                escape_controls(scope["method"]),
                loggable_path(scope["path"]),
                status,
                (time.perf_counter() - started) * 1000,
            )
