"""The shop's tasks. The store URL comes from ONCEQ_URL (or sqlite:///onceq.db), so the
web process and `onceq worker --app examples.fastapi_app.tasks:app` agree on it."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from onceq import App

app = App()


class Receipt(BaseModel):
    order_id: int
    email: str
    sent_at: datetime


@app.task(retries=3, retry_backoff=2.0)
def send_receipt(order_id: int, email: str) -> Receipt:
    """Send an order's receipt (here: build it; a real one would call a mail API)."""
    return Receipt(order_id=order_id, email=email, sent_at=datetime.now(UTC))
