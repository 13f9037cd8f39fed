"""PostgreSQL's one-statement cycle: the write commits on its own, so a statement that
fails after it must not read as "nothing was written" (the worker would forget the jobs
the write claimed) nor be retried (it would claim more)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from onceq.errors import OutcomeUnknown
from onceq.models import NewJob
from onceq.store import open_store
from onceq.store.base import new_claim
from onceq.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

LEASE = 30.0


@pytest.fixture
def pg(pg_url: str) -> Iterator[PostgresStore]:
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    yield store
    store.close()


def test_a_statement_failing_after_the_cycle_committed_is_an_unknown_outcome(
    pg: PostgresStore,
) -> None:
    pg.job_insert_many([NewJob(task="t", args={"i": i}) for i in range(4)])
    first = pg.job_claim("w", None, 2, LEASE)
    pg.job_cancel(first[1].job_id)  # its completion is stale: a follow-up notes it
    pg._qb["attempt_reject"] = b"SELECT 1 / 0"  # that follow-up fails, the cycle committed
    claim = new_claim()
    with pytest.raises(OutcomeUnknown, match="division by zero"):
        pg.job_complete_and_claim(
            [(first[0], '"ok"'), (first[1], '"late"')], "w", None, 2, LEASE, claim=claim
        )
    # It committed once (not retried): the result is in, exactly two jobs were claimed,
    # and the claim number finds them.
    assert pg.job_get(first[0].job_id).status == "succeeded"
    adopted = pg.job_adopt("w", [claim], LEASE)
    assert sorted(x.args for x in adopted) == ['{"i":2}', '{"i":3}']
    assert [j.status for j in pg.job_list(status="running")] == ["running", "running"]
