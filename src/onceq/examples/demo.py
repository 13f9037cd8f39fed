"""The tasks behind `onceq demo`: a pretend crawl with a fan-out and a join.

fetch_index ──> fetch_page (one job per URL, 3 at a time) ──┐
          └──> fetch_sitemap ──────────────────────────────┴──> validate
on failure of fetch_page: report
"""

from __future__ import annotations

import random
import time
from typing import Any

from onceq import App, current_job

app = App()  # ONCEQ_URL, set by `onceq demo` to a fresh SQLite file


@app.task
def fetch_index(site: str, pages: int) -> list[str]:
    """The list of pages to fetch."""
    time.sleep(0.2)
    return [f"{site}/page/{n}" for n in range(1, pages + 1)]


@app.task(retries=2, retry_backoff=0.05)
def fetch_page(url: str) -> dict[str, Any]:
    """One page (each takes a little while; a few fail once and are retried)."""
    time.sleep(random.uniform(0.05, 0.25))
    if current_job().attempt == 1 and url.endswith(("/7", "/19")):
        raise ConnectionError(f"{url}: connection reset (a retry will do)")
    return {"url": url, "words": len(url) * 37 % 500 + 100}


@app.task
def fetch_sitemap(site: str, pages: int) -> int:
    """How many pages the site says it has."""
    time.sleep(0.3)
    return pages


@app.task
def validate(pages: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    """The join: runs once, with every page's result in item order."""
    return {"pages": len(pages), "expected": expected, "ok": len(pages) == expected,
            "words": sum(p["words"] for p in pages)}  # fmt: skip


@app.task
def report(site: str) -> str:
    """Runs only if fetching pages failed."""
    return f"fetching {site} failed"
