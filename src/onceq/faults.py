"""Named fault points: the places where the fault-injection tier makes onceq crash, lose
the database's answer, or stall. Off (one dict lookup) unless ONCEQ_FAULTS is set.

    ONCEQ_FAULTS="claim.committed=lost@0.05,complete.before_commit=crash@0.02"
    ONCEQ_FAULTS_SEED=7      # each process draws from seed + pid
    ONCEQ_FAULTS_DELAY=3.0   # seconds a `delay` lasts
    ONCEQ_FAULTS_ONCE=/tmp/x # each point fires once, across processes (a file per point)

Points: `<verb>.before_commit` (the transaction's statements ran, COMMIT not sent) and
`<verb>.committed` (COMMIT answered) for every store write, named by its verb (claim,
complete, fail, release, rescue, heartbeat, adopt, insert, cancel…), and
`advance.before` (a job's final status is written, its workflow run not yet advanced);
the batch runner's `batch.pr_created`, `batch.merge.before_swap` and `batch.merge.swapped`
(the base has moved, the task is not yet recorded merged).

Actions: `crash` exits the process at once (as SIGKILL would, from inside); `delay`
sleeps; `lost` is returned to the caller, which acts as if the connection dropped there:
before the commit, nothing is written; after it, the write happened and the answer is
lost.
"""

from __future__ import annotations

import os
import random
import time

from onceq.errors import ConfigError

CRASH_EXIT = 70  # the exit code of an injected crash
_ACTIONS = ("crash", "lost", "delay")


def _parse(spec: str) -> dict[str, tuple[str, float]]:
    rules: dict[str, tuple[str, float]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            point, rest = part.split("=", 1)
            action, _, rate = rest.partition("@")
            rules[point.strip()] = (action.strip(), float(rate or 1.0))
        except ValueError:
            raise ConfigError(
                f"bad ONCEQ_FAULTS rule {part!r}: expected point=action@rate"
            ) from None
        if action.strip() not in _ACTIONS:
            raise ConfigError(f"bad ONCEQ_FAULTS action {action!r}: one of {', '.join(_ACTIONS)}")
    return rules


RULES = _parse(os.environ.get("ONCEQ_FAULTS", ""))
DELAY = float(os.environ.get("ONCEQ_FAULTS_DELAY", "3.0"))
ONCE = os.environ.get("ONCEQ_FAULTS_ONCE", "")
_random = random.Random(int(os.environ.get("ONCEQ_FAULTS_SEED", "0")) + os.getpid())


def load() -> None:
    """Read the rules again, seeded for this process: a forked worker (its supervisor
    disabled them for itself, and the two must not draw the same numbers)."""
    global DELAY, ONCE
    RULES.clear()
    RULES.update(_parse(os.environ.get("ONCEQ_FAULTS", "")))
    DELAY = float(os.environ.get("ONCEQ_FAULTS_DELAY", "3.0"))
    ONCE = os.environ.get("ONCEQ_FAULTS_ONCE", "")
    _random.seed(int(os.environ.get("ONCEQ_FAULTS_SEED", "0")) + os.getpid())


def disable() -> None:
    """No faults in this process (the supervisor: the rules are for the workers it
    starts, which load them again; a supervisor taken down would take them all)."""
    RULES.clear()


def hit(point: str) -> bool:
    """Pass a fault point: crash or stall here if a rule says so; True if the caller must
    act as if the database's answer was lost here."""
    rule = RULES.get(point)
    if rule is None:
        return False
    action, rate = rule
    if _random.random() >= rate or (ONCE and not _first(point)):
        return False
    os.write(2, f"onceq: injected {action} at {point}\n".encode())  # what the tier counts
    if action == "crash":
        os._exit(CRASH_EXIT)
    if action == "delay":
        time.sleep(DELAY)
        return False
    return True


def _first(point: str) -> bool:
    """Whether this is the point's first firing under ONCEQ_FAULTS_ONCE (any process)."""
    try:
        os.close(os.open(os.path.join(ONCE, point), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
