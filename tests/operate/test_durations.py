"""Durations, wherever one enters (retention, every=, a task's timeout, prune's
--older-than, a worker's --lease and --grace): refused in one line past 100 years, where
`now + d` no longer fits a date and a worker's clock or a schedule would fail later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onceq import App
from onceq.durations import MAX_SECONDS, parse_duration, seconds
from onceq.errors import ConfigError


def test_durations_up_to_100_years_and_no_more() -> None:
    assert parse_duration("36524d") == 36524 * 86400
    assert seconds(MAX_SECONDS, "retention") == MAX_SECONDS
    for bad in ("36526d", 1e300, 10 * MAX_SECONDS):
        with pytest.raises(ConfigError, match="is too long: at most 100 years"):
            seconds(bad, "retention")
    with pytest.raises(ConfigError, match="too long"):
        App("sqlite:///:memory:", retention="99999999999d")
    app = App("sqlite:///:memory:")
    with pytest.raises(ValueError, match="timeout must be positive, at most 100 years"):
        app.task(name="t", timeout=1e12)(lambda: None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "--older-than", "99999999999d"], "error: duration '99999999999d' is too long"),
        (["worker", "--lease", "1e300"], "Invalid value for '--lease'"),
        (["worker", "--grace", "1e12"], "Invalid value for '--grace'"),
    ],
)
def test_the_cli_refuses_a_duration_past_100_years(
    tmp_path: Path, args: list[str], message: str
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    done = subprocess.run([sys.executable, "-m", "onceq", *args, "--url", url],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "s.db").exists()
