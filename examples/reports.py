"""A long job that reports how far it is: `bgrun wait`, `show` and the dashboard draw it."""

from __future__ import annotations

import time

import bgrun


def build(month: str = "2026-05", pages: int = 20, seconds_per_page: float = 0.25) -> dict:
    """Renders a monthly report page by page, reporting each page done."""
    for page in range(pages):
        bgrun.progress(page, pages, f"{month}: rendering page {page + 1} of {pages}")
        time.sleep(seconds_per_page)
    bgrun.progress(pages, pages, f"{month}: {pages} pages written")
    return {"month": month, "pages": pages}
