"""A user's app, for tests/test_typing.py: mypy --strict must report exactly the lines
marked with an expected error code, and nothing else (every other line is a silence
that must hold)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from onceq import App, Job, Workflow

app = App()


class Thumbnail(BaseModel):
    image_id: int
    width: int


@app.task(retries=3, timeout=30)
def resize(image_id: int, width: int = 800) -> Thumbnail:
    return Thumbnail(image_id=image_id, width=width)


@app.task
async def fetch(url: str) -> datetime:
    return datetime.now()


@app.task
def untyped(x, y=2):  # type: ignore[no-untyped-def]
    return x


job: Job[Thumbnail] = resize.enqueue(image_id=7)
job2 = resize.enqueue(7, width=100)
keyed = resize.configure(key="resize-7", delay=5).enqueue(image_id=7)
done = app.wait(job, timeout=10)
thumb: Thumbnail | None = done.result
if done.result is not None:
    width: int = done.result.width
anything = app.wait(job.id).result  # by id: the result's type is not known (Any)
if anything is not None:
    anything.whatever  # noqa: B018 - Any, so no error
fetched: datetime | None = app.wait(fetch.enqueue(url="https://example.org")).result
untyped.enqueue(1, y="whatever")
direct: Thumbnail = resize(3)  # calling the task runs the handler in-process
Workflow("w").step("r", resize, args={"image_id": "$input.id"})

resize.enqueue(image_id="7")  # error: arg-type
resize.enqueue(imageid=7)  # error: call-arg
resize.enqueue()  # error: call-arg
resize.enqueue(image_id=7, key="k")  # error: call-arg
resize.configure(delay="soon")  # error: arg-type
fetch.enqueue(url=3)  # error: arg-type
wrong: Job[str] = resize.enqueue(image_id=1)  # error: assignment
text: str = app.wait(job).result  # error: assignment
print(done.result.width)  # error: union-attr


async def view() -> None:
    later = await fetch.enqueue_async(url="u")
    when: datetime | None = (await app.wait_async(later, timeout=3)).result
    await fetch.enqueue_async(url=b"u")  # error: arg-type
    number: int | None = (await app.wait_async(later)).result  # error: assignment
    print(when, number)
