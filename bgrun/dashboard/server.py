"""Placeholder until the dashboard lands: says so in one line."""

from __future__ import annotations

from bgrun.config import Config
from bgrun.errors import ConfigError


def serve_dashboard(config: Config, host: str, port: int) -> None:
    """Serve the dashboard on host:port."""
    raise ConfigError("the dashboard is not built yet")
