"""`bgrun dashboard`: build the app and serve it with waitress (which runs on Windows too)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import waitress

from bgrun.config import Config, merged_environ
from bgrun.dashboard import security, sessions
from bgrun.dashboard.app import create_app
from bgrun.errors import ConfigError


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
        server = waitress.create_server(app, host=host, port=port, threads=8, ident="bgrun")
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
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
