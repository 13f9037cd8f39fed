"""One code task, from its first agent round to its merge: the handler of a batch job.

A task's job holds its lease for the whole way: the worktree slot, every status write
and the merge queue's turn are fenced by it (onceq.store.batches). What git holds is
made safe to redo: a round that a crash interrupted starts again from the commit it
started from, on a reset worktree; a merge that a crash interrupted is found again on
the base by its `Onceq-Task` trailer, so it is recorded, never made twice.

    in_progress/fixing -> pr_created -> reviewing -> approved -> merged
      ^ agent round        (committed)    (scope, verify)   (merge queue)
      '-- feedback: a failed round, review, conflict or post-merge check (or failed)
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from onceq import faults
from onceq.batch import commands, git, pool
from onceq.batch.spec import BatchSpec, TaskSpec
from onceq.context import JobContext
from onceq.errors import LeaseLost, OnceqError
from onceq.models import BatchRecord
from onceq.store import Store

log = logging.getLogger("onceq.batch")
TURN_POLL = 0.02  # seconds between looks at a busy merge queue
BLOCKED_WAIT = 1.0  # seconds between tries to merge past a checkout with local changes
BLOCKED = ("", "")  # _merge_onto_tip: a checkout of the base is in the way, try again


class TaskFailed(OnceqError):
    """The task used up its fix rounds (or cannot be done): it ends failed, not retried."""


@dataclass
class State:
    """What batch_task_update writes: every field, every time."""

    status: str
    rounds: int
    worktree: str | None
    start: str | None
    verified: str | None
    feedback: str | None
    error: str | None
    merged_as: str | None


class TaskRun:
    """One attempt at one task (one job lease)."""

    def __init__(self, store: Store, ctx: JobContext, batch: BatchRecord, number: str) -> None:
        self.store, self.ctx, self.number = store, ctx, number
        self.spec = BatchSpec.model_validate(batch.definition["spec"])
        if not any(t.number == number for t in self.spec.tasks):
            raise TaskFailed(f"task {number} is no longer in batch {batch.name}'s file")
        self.task: TaskSpec = self.spec.task(number)
        self.batch_dir = batch.definition["dir"]
        self.name, self.base_start = batch.name, batch.base_start
        self.repo = Path(batch.repo)
        known = batch.definition  # (a batch submitted by an older onceq: asked of git)
        self.common = Path(known["common"]) if "common" in known else git.common_dir_cached(
            self.repo)  # fmt: skip
        self.base_ref = f"refs/heads/{batch.base}"
        self.branch = self.spec.branch(number)
        self.lease = (ctx.job_id, ctx.token)
        row = batch.task(number)
        self.state = State(**{f.name: getattr(row, f.name) for f in fields(State)})
        self.who = tuple(known["who"]) if "who" in known else git.identity_cached(self.repo)
        self.slot: int | None = None
        self.path = Path()
        self.left_queue: list[str] = []  # why it left the merge queue, each time
        # A verification that changed the files it verified (a formatter, say): what
        # passed was not the commit's own tree, so the merge result is verified anyway.
        # None: the last verification's worktree is to be looked at, when it matters.
        self.changed_by_verify: bool | None = True
        # Only an attempt that found the task approved can follow one that merged it
        # and died before recording it: the swap comes after the approved write, and
        # the merged write is the next one. Others need not look on the base for it.
        self.may_be_merged = row.status == "approved"
        # While another task holds the merge turn: the tip it announced (looked at
        # once), and (that tip, the branch's commit, tree, merge commit) when the merge
        # onto it passed verification in this worktree.
        self.looked_at: str | None = None
        self.speculated: tuple[str, str, str, str] | None = None

    # -- the whole way -------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        if self.state.status == "merged":
            return self._summary()
        self.slot, path = self._take_slot()
        self.path = Path(path)
        try:
            if self.state.status == "approved":
                # Taken up after its last holder died: the slot may hold anything that
                # holder left (a stale index.lock, half a checkout): made clean first.
                head = git.rev(self.repo, f"refs/heads/{self.branch}")
                assert head is not None, f"{self.branch} is gone"
                pool.prepare(self.repo, self.common, self.path, head)
                self._merge()
            else:
                self._rounds()
        finally:
            try:  # its job's end frees it too: this only makes it sooner
                self.store.batch_slot_free(self.name, self.slot, self.lease)
            except OnceqError as exc:
                log.warning("batch %s: slot %s not freed yet (%s)", self.name, self.slot, exc)
        return self._summary()

    def _rounds(self) -> None:
        status = self.state.status
        if status in ("pr_created", "reviewing"):
            # The round's change is on the branch already: review it again.
            head = git.rev(self.repo, self.branch)
            assert head is not None, f"{self.branch} is gone"
            pool.prepare(self.repo, self.common, self.path, head)
        else:
            if status == "pending" or self.state.rounds == 0:
                self.state.start = None  # the base's tip, as the worktree checks it out
                self.state.rounds = 1
            # in_progress/fixing: a round a crash interrupted, from where it started
            head = self._agent_round()
        self._until_merged(head)

    def _until_merged(self, head: str) -> None:
        """Review the change at `head`; back to the agent until it passes; then merge."""
        while True:
            problem = self._review(head)
            if problem is None:
                self._write("approved")
                return self._merge()
            self._next_round(problem, start=head)
            head = self._agent_round()

    def _next_round(self, feedback: str, start: str) -> None:
        """Back to the agent with what went wrong, or failed when no round is left."""
        if self.state.rounds > self.spec.fix_rounds:
            self._write("failed", error=feedback.splitlines()[0], feedback=feedback)
            raise TaskFailed(f"task {self.number}: {feedback.splitlines()[0]}")
        self.state.start = start
        self.state.rounds += 1
        self._write("fixing", feedback=feedback)

    # -- one agent round -----------------------------------------------------------

    def _agent_round(self) -> str:
        """Run the agent from the round's start; the commit its change ended as."""
        start = self.state.start
        if start is None:  # a first round: from the base's tip, read as it is checked out
            try:
                pool.prepare(self.repo, self.common, self.path, self.base_ref)
            except git.GitError:
                self._base_tip()  # TaskFailed, naming the base, when it is the one gone
                raise
            start = self.state.start = pool.head(self.path)
        else:
            pool.prepare(self.repo, self.common, self.path, start)
        first = self.state.rounds == 1 and self.state.feedback is None
        self._write("in_progress" if first else "fixing", worktree=str(self.path))
        ran = commands.run(self.spec.agent, self.path, self._env(), self.spec.timeout,
                           self.ctx.should_stop)  # fmt: skip
        self._check_lease()
        pool.detach(self.path)
        git.commit_all(self.path, self._message(), self.who)
        head = pool.head(self.path)
        if not ran.ok:
            problem = f"the agent {ran.describe()}\n{ran.output}"
            self._next_round(problem, start=start)
            return self._agent_round()
        if head == start:
            self._next_round("the agent made no change", start=start)
            return self._agent_round()
        git.set_ref(self.repo, f"refs/heads/{self.branch}", head)
        self._write("pr_created")
        faults.hit("batch.pr_created")
        return head

    def _env(self) -> dict[str, str]:
        round_no = self.state.rounds - 1
        document = {**self.task.model_dump(), "round": round_no, "feedback": self.state.feedback,
                    "batch": self.name, "branch": self.branch}  # fmt: skip
        folder = pool.pool_root(self.common, self.name) / "tasks"
        folder.mkdir(parents=True, exist_ok=True)
        task_file = folder / f"{self.number}.json"
        task_file.write_text(json.dumps(document, indent=2))
        return {
            **os.environ,
            "ONCEQ_TASK_NUMBER": self.number,
            "ONCEQ_TASK_TITLE": self.task.title,
            "ONCEQ_TASK_ROUND": str(round_no),
            "ONCEQ_TASK_FILE": str(task_file),
            "ONCEQ_BATCH": self.name,
            "ONCEQ_BATCH_DIR": self.batch_dir,
        }

    # -- review --------------------------------------------------------------------

    def _review(self, head: str) -> str | None:
        """What is wrong with the change at `head`, or None; verified on a clean
        checkout of it (nothing ignored or left over counts). The worktree is at `head`
        with nothing uncommitted but what git ignores (a round just committed all the
        rest, or it was reset there): cleaning is enough."""
        self._write("reviewing")
        pool.clean(self.path)
        if self.task.files is not None:
            outside = [f for f in git.changed_files(self.path, self.base_ref, head)
                       if not any(_inside(f, p) for p in self.task.files)]  # fmt: skip
            if outside:
                self.state.verified = f"failed: changed files outside `files`: {', '.join(outside)}"
                return f"the change touches files outside `files`: {', '.join(outside)}"
        return self._verify()

    def _verify(self, abandon: Callable[[], bool] = lambda: False) -> str | None:
        """What failed, or None; `abandon`: stop (and fail) as soon as it says so."""
        steps = [*self.spec.verify, *self.task.verification_steps]
        env = self._env()

        def stop() -> bool:
            return self.ctx.should_stop() or abandon()

        for command in steps:
            ran = commands.run(command, self.path, env, self.spec.timeout, stop)
            self._check_lease()
            if not ran.ok:
                self.state.verified = f"failed: {ran.describe()}"
                return f"verification {ran.describe()}\n{ran.output}"
        self.state.verified = f"passed: {len(steps)} step(s)"
        self.changed_by_verify = None if steps else False
        return None

    def _verify_changed_files(self) -> bool:
        """Whether the last verification left the worktree changed (looked at once)."""
        if self.changed_by_verify is None:
            self.changed_by_verify = bool(git.dirty(self.path))
        return self.changed_by_verify

    # -- the merge queue -----------------------------------------------------------

    def _merge(self) -> None:
        while True:
            with pool.merge_lock(self.common, self.name, self.ctx.should_stop,
                                 self._speculate):  # fmt: skip
                follow = self._merge_onto_tip()
            if follow != BLOCKED:
                break
            time.sleep(BLOCKED_WAIT)  # the turn is free meanwhile: others may merge
            self._check_lease()
        if follow is not None:  # left the queue: back to the agent, then here again
            self._next_round(*follow)
            self._until_merged(self._agent_round())

    def _merge_onto_tip(self) -> tuple[str, str] | None:
        """Merge the task's branch onto the base's tip, once; or (feedback, where the
        next round starts) when it left the queue; or BLOCKED, by a checkout of the
        base."""
        self._take_turn()
        branch = f"refs/heads/{self.branch}"
        try:  # the branch's commit and tree, and the base's tip, in one call
            head, verified, old = git.revs(self.repo, f"{branch}^{{commit}}", f"{branch}^{{tree}}",
                                           f"{self.base_ref}^{{commit}}")  # fmt: skip
        except git.GitError:
            assert git.rev(self.repo, branch) is not None, f"{self.branch} is gone"
            self._base_tip()  # TaskFailed, naming the base, when it is the one gone
            raise
        while True:
            if self.may_be_merged:
                tag = self.spec.tag(self.number)
                done = git.tasks_merged(self.repo, old, self.base_start).get(tag)
                if done is not None:  # merged by an attempt that died before recording it
                    for checkout in git.checkouts(self.repo, self.spec.base):
                        git.catch_up(checkout, old, self.base_start)  # it may not have moved
                    self._merged(done)
                    return None
            checked = False  # the merge commit verified already (while waiting)
            if self.speculated is not None and self.speculated[:2] == (old, head):
                _, _, tree, new = self.speculated
                checked = True
            else:
                merged, conflict = git.merge_tree(self.repo, old, head)
                if merged is None:
                    return self._leave_queue(f"merge conflict with {self.spec.base} at "
                                             f"{old[:12]}: {conflict}", start=old)  # fmt: skip
                tree = merged
                new = git.commit_tree(self.repo, tree, old, self._message(), self.who)
            pool.announce_tip(self.common, self.name, new)  # for those waiting: _speculate
            # What was verified is a tree: the same tree (the base has not moved since
            # the round started) needs no second verification.
            if (
                not checked
                and (tree != verified or self._verify_changed_files())
                and (self.spec.verify or self.task.verification_steps)
            ):
                pool.reset(self.path, new)
                problem = self._verify()
                if problem is not None:
                    return self._leave_queue(f"after merging onto {old[:12]}: {problem}",
                                             start=head)  # fmt: skip
            faults.hit("batch.merge.before_swap")
            self._take_turn()  # still ours, right before the base moves
            moved, blocked = git.advance(self.repo, self.spec.base, old, new, self.base_start)
            if blocked:  # never move the base under a checkout that cannot follow
                log.warning("batch %s: task %s waits to merge: %s", self.name, self.number,
                            blocked)  # fmt: skip
                pool.announce_tip(self.common, self.name, "")  # not coming: see _speculate
                self._write("approved", error=blocked, turn_done=True)
                return BLOCKED
            if not moved:  # the base moved meanwhile: merge onto its new tip, verify again
                self._take_turn()
                old = self._base_tip()
                # (Or the swap went through and git said otherwise: look on the base.)
                self.may_be_merged = True
                continue
            faults.hit("batch.merge.swapped")
            self._merged(new)
            return None

    def _speculate(self) -> None:
        """While another task holds the merge turn: merge onto the commit it announced
        and verify that here, so that if the base is there at this task's turn, the
        swap is all that is left (the next merge's verification overlaps the holder's).
        One waiter at a time: more would run verifications on the same cores that the
        first one's turn makes stale. A conflict or a failure here proves nothing (that
        commit may never land): the turn does it again, for real."""
        tip = pool.announced_tip(self.common, self.name)
        if tip is None or tip == self.looked_at:
            return
        if not (self.spec.verify or self.task.verification_steps):
            return  # nothing to verify: the turn's merge is cheap
        with pool.ahead_lock(self.common, self.name) as mine:
            if mine:  # (if not, it looks again once the one merging ahead is done)
                self.looked_at = tip
                self._merge_ahead(tip)

    def _merge_ahead(self, tip: str) -> None:
        try:
            (head,) = git.revs(self.repo, f"refs/heads/{self.branch}^{{commit}}")
            merged, _ = git.merge_tree(self.repo, tip, head)
            if merged is None:
                return
            new = git.commit_tree(self.repo, merged, tip, self._message(), self.who)
            self._verify_changed_files()  # what the review's verification left, first
            kept = (self.state.verified, self.changed_by_verify)
            self.speculated = None  # the worktree changes now
            pool.reset(self.path, new)
            # Cut short when the holder takes its announcement back (it left the queue)
            # or another holder announces: what it verifies would never be swapped in.
            problem = self._verify(lambda: pool.announced_tip(self.common, self.name) != tip)
            self.state.verified, self.changed_by_verify = kept
        except git.GitError as exc:  # (the turn will meet it again if it matters)
            log.info("batch %s: task %s did not merge ahead onto %s: %s", self.name,
                     self.number, tip[:12], exc)  # fmt: skip
            return
        if problem is None:
            self.speculated = (tip, head, merged, new)

    def _leave_queue(self, why: str, start: str) -> tuple[str, str]:
        """Out of the merge queue, and why: the next round's feedback and start."""
        pool.announce_tip(self.common, self.name, "")  # what it announced is not coming
        self.store.batch_merge_free(self.name, self.lease)
        self.left_queue.append(why.splitlines()[0])
        self.state.error = self.left_queue[-1]  # shown while it is fixed; cleared at merge
        log.info("batch %s: task %s left the merge queue: %s", self.name, self.number,
                 self.left_queue[-1])  # fmt: skip
        return why, start

    def _merged(self, commit: str) -> None:
        self._write("merged", merged_as=commit, feedback=None, error=None, turn_done=True)
        log.info("batch %s: task %s merged as %s", self.name, self.number, commit[:12])

    def _take_turn(self) -> None:
        while not self.store.batch_merge_take(self.name, self.lease):
            self._check_lease()
            time.sleep(TURN_POLL)

    # -- helpers -------------------------------------------------------------------

    def _take_slot(self) -> tuple[int, str]:
        while True:
            found = self.store.batch_slot_take(self.name, self.lease)
            if found is not None:
                return found
            self._check_lease()
            time.sleep(0.1)

    def _base_tip(self) -> str:
        tip = git.rev(self.repo, self.base_ref)
        if tip is None:
            raise TaskFailed(f"the base branch {self.spec.base} is gone")
        return tip

    def _message(self) -> str:
        return f"{self.number}: {self.task.title}\n\nOnceq-Task: {self.spec.tag(self.number)}\n"

    def _check_lease(self) -> None:
        if self.ctx.should_stop():
            raise LeaseLost(f"task {self.number}: the job's lease was lost")

    def _write(self, status: str, turn_done: bool = False, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.state.status = status
        self.store.batch_task_update(self.name, self.number, self.lease, turn_done=turn_done,
                                     **asdict(self.state))  # fmt: skip

    def _summary(self) -> dict[str, Any]:
        return {"number": self.number, "status": self.state.status, "rounds": self.state.rounds,
                "merged_as": self.state.merged_as, "left_queue": self.left_queue}  # fmt: skip


def _inside(path: str, pattern: str) -> bool:
    """Whether a changed file is covered by one entry of `files`: the path itself, a
    folder ending in `/`, or a glob where `*` stays inside one folder and `**` crosses
    folders (git's `:(glob)` rules)."""
    if pattern.endswith("/"):
        return path.startswith(pattern)
    if not any(c in pattern for c in "*?["):
        return path == pattern
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.fullmatch(regex, path) is not None
