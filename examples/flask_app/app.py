"""Flask, the sync way: `flask --app examples.flask_app.app run`, and
`onceq worker --app examples.flask_app.app:queue` beside it (same ONCEQ_URL).

A sync view enqueues with `task.enqueue(...)`, committed when it returns. To tie the job
to the view's own database write, do both on one PostgreSQL connection:
`with queue.using(conn): make_thumbnail.enqueue(...)` inside that connection's
transaction (see the Django recipe).
"""

from __future__ import annotations

from flask import Flask, abort, request

from onceq import App, JobNotFound, PayloadError

queue = App()
web = Flask(__name__)


@queue.task(timeout=60)
def make_thumbnail(image_id: int, width: int = 200) -> dict[str, int]:
    return {"image_id": image_id, "width": width}


@web.post("/images/<int:image_id>/thumbnail")
def thumbnail(image_id: int) -> tuple[dict[str, int], int]:
    try:
        job = make_thumbnail.enqueue(image_id=image_id, width=request.args.get("width", 200))
    except PayloadError as exc:  # validated at enqueue: a bad width is the caller's error
        abort(400, str(exc))
    return {"job": job.id}, 202


@web.get("/jobs/<int:job_id>")
def job(job_id: int) -> dict[str, object]:
    try:
        found = queue.get_job(job_id)
    except JobNotFound:
        abort(404)
    return {"status": found.status, "result": found.result}
