"""The web side: `uvicorn examples.fastapi_app.main:api`.

Endpoints are async, so they enqueue with `enqueue_async` (psycopg's async connection on
PostgreSQL, a thread on SQLite): the event loop never waits on the database. The
lifespan closes onceq's connections when the server stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

from examples.fastapi_app.tasks import Receipt, app, send_receipt
from onceq import JobNotFound


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await app.aclose()


api = FastAPI(lifespan=lifespan)


@api.post("/orders/{order_id}/receipt", status_code=202)
async def request_receipt(order_id: int, email: str) -> dict[str, int]:
    # One receipt per order, however often the button is pressed: an idempotency key.
    job = await send_receipt.configure(key=f"receipt-{order_id}").enqueue_async(
        order_id=order_id, email=email
    )
    return {"job": job.id}


@api.get("/jobs/{job_id}")
async def job_status(job_id: int, wait: float = 0.0) -> dict[str, Any]:
    try:
        job = await app.wait_async(job_id, timeout=wait) if wait else app.get_job(job_id)
    except JobNotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    except TimeoutError:
        job = app.get_job(job_id)
    receipt = Receipt.model_validate(job.result) if job.status == "succeeded" else None
    return {"status": job.status, "receipt": receipt}
