"""A run that cannot be advanced fails alone: it holds up no rescue, no other run.

Rescue puts every expired lease back in one transaction that also advances the runs of
the jobs it fails. One run that raised there (here: a definition that no longer parses)
rolled the whole transaction back — on every worker, at every pass, forever, so no
expired lease was ever rescued again. Each run now advances under a savepoint of its
own; one that raises ends `failed` with the error, and the rest is recorded.
"""

from __future__ import annotations

from onceq import App, Workflow
from onceq.models import NewJob
from tests.helpers import eventually, sql_rows


def _runs(app: App) -> tuple[int, int]:
    @app.task(name="item")
    def item(n: int) -> int:
        return n

    wf = Workflow("fragile", input=["items"]).step(
        "fan", "item", with_items="$input.items", args={"n": "$item"}
    )
    return app.run_workflow(wf, {"items": [1]}), app.run_workflow(wf, {"items": [2]})


def test_a_run_that_cannot_be_advanced_fails_alone_and_rescue_goes_on(app: App) -> None:
    broken, sound = _runs(app)
    plain = app.store.job_insert(NewJob(task="item", args={"n": 3}))
    leases = app.store.job_claim("gone", None, 3, 0.0)  # a worker that died at once
    assert len(leases) == 3
    sql_rows(app.url, "UPDATE onceq_runs SET definition = ? WHERE id = ?",
             ('{"name": "fragile", "steps": "not steps"}', broken))  # fmt: skip
    rescued = eventually(app.store.job_rescue)
    assert {r.job_id for r in rescued} == {x.job_id for x in leases}
    assert all(r.status == "failed" for r in rescued)  # no attempts left: each is final
    ((status, error),) = sql_rows(app.url, "SELECT status, error FROM onceq_runs WHERE id = ?",
                                  (broken,))  # fmt: skip
    assert status == "failed"
    assert error.startswith("the run could not be advanced: ValidationError"), error
    shown = app.get_run(broken)  # and `onceq workflow show` can still show it
    assert (shown.status, [s.status for s in shown.steps]) == ("failed", ["failed"])
    assert app.get_run(sound).status == "failed"  # advanced as usual: its item failed
    assert app.get_job(plain.id).status == "failed"
    assert app.store.job_rescue() == []
