"""The dashboard's Flask app: one guard before every request, headers after, errors as pages."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from flask import (
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from bgrun.config import Config
from bgrun.context import Context, context_for
from bgrun.dashboard import security
from bgrun.dashboard.present import QueryError, visible
from bgrun.dashboard.sessions import COOKIE, Session, Sessions, Throttle
from bgrun.errors import BgrunError, InvalidStateError, NoSuchJobError
from bgrun.records import iso

MAX_BODY = 64 * 1024  # bytes of a request body: forms and API calls are tiny
PUBLIC_ENDPOINTS = frozenset({"pages.login", "pages.login_post", "static"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Dashboard:
    """What every request needs: the store and logs, the token, the names we answer to."""

    ctx: Context
    token: str
    hosts: frozenset[str]
    sessions: Sessions = field(default_factory=Sessions)
    throttle: Throttle = field(default_factory=Throttle)


def create_app(config: Config, token: str, *, hosts: Iterable[str] = (),
               sessions: Sessions | None = None) -> Flask:
    """The dashboard for `config`, signed into with `token`, answering loopback and `hosts`.

    `sessions`: the table of signed-in browsers (default: 30 min idle, 12 h in all).
    """
    from bgrun.dashboard import api, pages

    app = Flask(__name__)
    app.jinja_options = {**app.jinja_options, "finalize": visible}
    # No SECRET_KEY: Flask's own session (state signed into the cookie) stays unusable;
    # sessions live in `Sessions`, the cookie holds only their random id.
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["bgrun"] = Dashboard(context_for(config, create=False), token,
                                        security.LOCAL_NAMES | frozenset(hosts),
                                        Sessions() if sessions is None else sessions)
    app.add_template_filter(iso, "isotime")
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.before_request(_guard)
    app.after_request(_add_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(BgrunError, _bgrun_error)
    app.register_error_handler(QueryError, _query_error)
    return app


def dashboard() -> Dashboard:
    """The running app's Dashboard (store, token, hosts)."""
    return cast(Dashboard, current_app.extensions["bgrun"])


def csrf_token() -> str:
    """The CSRF token of this cookie session ('' for bearer requests, which need none)."""
    found: Session | None = g.get("session")
    return found.csrf if found is not None else ""


def request_host() -> str:
    """The request's Host header as sessions are bound to it (name and port)."""
    return request.headers.get("Host", "").strip().lower()


def current_session() -> Session | None:
    """The live session the request's cookie names on this Host, or None."""
    return dashboard().sessions.find(request.cookies.get(COOKIE), request_host())


def client() -> str:
    """Who sent the request, as far as the sign-in throttle tells clients apart."""
    return request.remote_addr or "-"


def throttled() -> Response | None:
    """429 while this client must wait after wrong tokens (its token is not even read)."""
    wait = dashboard().throttle.wait(client())
    if not wait:
        return None
    response = _refuse(429, f"too many wrong tokens: try again in {math.ceil(wait)} s")
    response.headers["Retry-After"] = str(math.ceil(wait))
    return response


def is_api() -> bool:
    """True when the request is for the JSON API (errors answer JSON there)."""
    return request.path.startswith("/api/")


def _guard() -> Response | None:
    """Refuse foreign Hosts, requests without the token, and POSTs without CSRF proof."""
    dash = dashboard()
    if not security.host_allowed(request.headers.get("Host", ""), dash.hosts):
        return _refuse(400, "this Host is not served here: add it to BGRUN_DASHBOARD_HOSTS")
    if request.method not in SAFE_METHODS and \
            not security.origin_allowed(request.headers.get("Origin"), dash.hosts):
        return _refuse(403, "cross-origin request refused")
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    given = security.bearer_token(request.headers.get("Authorization"))
    if given is not None:
        return _check_bearer(given)
    return _check_session()


def _check_bearer(given: str) -> Response | None:
    dash = dashboard()
    refused = throttled()
    if refused is not None:
        return refused
    if not security.tokens_equal(given, dash.token):
        dash.throttle.failed(client())
        return _refuse(401, "wrong token")
    dash.throttle.succeeded(client())
    g.auth = "bearer"
    return None


def _check_session() -> Response | None:
    found = current_session()
    if found is None:
        if request.method in SAFE_METHODS and not is_api():
            return cast(Response, redirect(url_for("pages.login")))
        return _refuse(401, "sign in first, or send Authorization: Bearer TOKEN")
    g.auth = "cookie"
    g.session = found
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf", "")
        if not security.tokens_equal(sent, found.csrf):
            return _refuse(403, "missing or wrong CSRF token: reload the page and try again")
    return None


def _refuse(code: int, message: str) -> Response:
    response = _error_response(code, message)
    if code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="bgrun"'
    return response


def _error_response(code: int, message: str) -> Response:
    if is_api():
        response = jsonify({"error": message})
    else:
        response = current_app.make_response(render_template(
            "error.html", code=code, message=message))
    response.status_code = code
    return response


def _http_error(exc: HTTPException) -> Response:
    return _error_response(exc.code or 500, exc.description or exc.name)


def _bgrun_error(exc: BgrunError) -> Response:
    if isinstance(exc, NoSuchJobError):
        return _error_response(404, str(exc))
    if isinstance(exc, InvalidStateError):
        return _error_response(409, str(exc))
    return _error_response(503, str(exc))  # the store or a setting is unusable


def _query_error(exc: QueryError) -> Response:
    return _error_response(400, str(exc))


def _add_headers(response: Response) -> Response:
    response.headers.update(security.SECURITY_HEADERS)
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"  # job params can hold secrets
    return response
