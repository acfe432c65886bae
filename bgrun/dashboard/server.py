"""`bgrun dashboard`: build the app and serve it with waitress (which runs on Windows too)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import waitress
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from bgrun.config import Config, merged_environ
from bgrun.dashboard import security, sessions
from bgrun.dashboard.app import MAX_BODY, create_app
from bgrun.errors import ConfigError

#: waitress settings that fit a dashboard: a few people and scripts, small requests.
#: A body over MAX_BODY is refused (413) from its Content-Length, before it is read, or
#: as soon as a chunked one passes it; idle connections are closed after
#: `channel_timeout` seconds, so idle sockets cannot hold every connection for long.
LIMITS: dict[str, object] = {
    "threads": 8,
    "connection_limit": 100,
    "channel_timeout": 20,
    "cleanup_interval": 5,
    "max_request_header_size": 32 * 1024,
    "max_request_body_size": MAX_BODY,
    "inbuf_overflow": MAX_BODY,
    "expose_tracebacks": False,
    "ident": "bgrun",
}


class _ErrorTask(ErrorTask):  # type: ignore[misc] # waitress has no type hints
    """waitress's own answers (413, 431, 400 for a malformed request, 500), which never
    reach Flask, with the same security headers as the app's (their body is text/plain
    and names only the limit that was passed)."""

    def execute(self) -> None:
        self.response_headers.extend(security.SECURITY_HEADERS.items())
        self.response_headers.append(("Cache-Control", "no-store"))
        super().execute()


class _Channel(HTTPChannel):  # type: ignore[misc]
    error_task_class = _ErrorTask


@dataclass
class Served:
    """A dashboard bound to its socket, not yet serving."""

    server: Any  # waitress has no type hints
    url: str
    token: str
    generated: bool


def build_server(config: Config, host: str, port: int, environ: Mapping[str, str]) -> Served:
    """Bind the dashboard to host:port (0 picks a free port); ConfigError if it cannot."""
    token, generated = security.load_token(environ)
    app = create_app(config, token, hosts=security.allowed_hosts(environ, host),
                     sessions=sessions.from_environ(environ))
    try:
        server = waitress.create_server(app, host=host, port=port, **LIMITS)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.channel_class = _Channel
    shown = f"[{host}]" if ":" in host else host
    return Served(server, f"http://{shown}:{server.effective_port}/", token, generated)


def serve_dashboard(config: Config, host: str, port: int) -> None:
    """Serve the dashboard on host:port until interrupted; print the token if generated."""
    served = build_server(config, host, port, merged_environ(Path.cwd(), os.environ))
    os.environ.pop(security.TOKEN_ENV, None)  # read once; nothing started from here gets it
    print(f"bgrun dashboard: serving on {served.url} (Ctrl-C stops it)", flush=True)
    if served.generated:
        print(f"bgrun dashboard: sign-in token (generated, shown only now): {served.token}",
              flush=True)
    try:
        served.server.run()
    except KeyboardInterrupt:
        pass
    finally:
        served.server.close()
