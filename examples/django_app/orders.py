"""Placing an order: the order row and the job that ships it commit together or not at
all — the outbox pattern, with onceq's job table as the outbox.

Inside `transaction.atomic()`, `queue.using(connection)` makes the enqueue part of
Django's transaction on the same PostgreSQL database, so no `transaction.on_commit`
dance is needed: if the block raises, neither the order nor the job exists; once it
commits, both do, and a worker (`onceq worker --app examples.django_app.orders:queue`)
ships it.
"""

from __future__ import annotations

from django.db import connection, transaction

from onceq import App

queue = App()


@queue.task(retries=5)
def ship(order_id: int) -> str:
    return f"order {order_id} shipped"


def place_order(item: str, *, fail_after_enqueue: bool = False) -> int:
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("INSERT INTO shop_orders (item) VALUES (%s) RETURNING id", [item])
            order_id: int = cur.fetchone()[0]
        with queue.using(connection):
            ship.enqueue(order_id=order_id)
        if fail_after_enqueue:
            raise RuntimeError("payment declined")  # rolls back the order and the job
    return order_id
