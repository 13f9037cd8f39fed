"""The Django recipe (examples/django_app): enqueue inside `transaction.atomic()` on the
same PostgreSQL database — the order and its job commit together or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers import sql_rows

pytestmark = pytest.mark.postgres


@pytest.fixture
def django_db(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ONCEQ_URL", pg_url)  # read by the settings and by App()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    import django
    from django.db import connection, connections

    django.setup()
    from examples.django_app import orders

    with connection.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS shop_orders (id serial, item text)")
        cur.execute("TRUNCATE shop_orders")
    yield
    orders.queue.close()
    connections.close_all()


def test_the_order_and_its_job_commit_together(django_db: None, pg_url: str) -> None:
    from django.db import connection

    from examples.django_app import orders

    orders.queue.store  # noqa: B018 - its schema, before Django's transaction
    with pytest.raises(RuntimeError, match="payment declined"):
        orders.place_order("lamp", fail_after_enqueue=True)
    order_id = orders.place_order("desk")
    with connection.cursor() as cur:
        cur.execute("SELECT id, item FROM shop_orders")
        assert cur.fetchall() == [(order_id, "desk")]
    assert sql_rows(pg_url, "SELECT task, args->>'order_id' FROM onceq_jobs") == [
        ("examples.django_app.orders.ship", str(order_id))
    ]
    orders.queue.run_until_idle()
    [job] = orders.queue.store.job_list()
    assert (job.status, job.result) == ("succeeded", f"order {order_id} shipped")
