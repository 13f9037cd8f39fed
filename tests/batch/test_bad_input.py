"""Bad input to `onceq batch run`: one line naming the problem, exit 2, and nothing
created — no store, no worktree, no branch, the repository as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.batch.conftest import Project, git

TASK = {"number": "1", "title": "t", "implementation": "write a.txt a"}


@pytest.fixture
def project(tmp_path: Path) -> Project:  # the checks come before any store is opened
    return Project(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")


def refused(project: Project, file: Path, expected: str) -> None:
    before = (git(project.repo, "rev-parse", "main"), project.status())
    done = project.run(file, code=2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert not (project.root / "store.db").exists()
    assert not (project.repo / ".git" / "onceq-worktrees").exists()
    assert git(project.repo, "for-each-ref", "refs/heads/onceq") == ""
    assert git(project.repo, "worktree", "list").count("\n") == 0
    assert (git(project.repo, "rev-parse", "main"), project.status()) == before


def test_not_a_git_repository(project: Project) -> None:
    (project.root / "plain").mkdir()
    refused(project, project.batch("b", [TASK], repo="plain"), "is not a git repository")


def test_a_repository_that_does_not_exist(project: Project) -> None:
    refused(project, project.batch("b", [TASK], repo="nowhere"), "is not a directory")


def test_a_dirty_checkout_of_the_base(project: Project) -> None:
    (project.repo / "README.md").write_text("edited, not committed\n")
    refused(project, project.batch("b", [TASK]), "uncommitted changes")


def test_an_unknown_base_branch(project: Project) -> None:
    refused(project, project.batch("b", [TASK], base="develop"), "base 'develop': no such branch")


def test_an_agent_command_that_does_not_exist(project: Project) -> None:
    file = project.batch("b", [TASK], agent="no-such-agent-here --fix")
    refused(project, file, "agent command not found: 'no-such-agent-here'")


def test_an_agent_script_that_does_not_exist(project: Project) -> None:
    refused(project, project.batch("b", [TASK], agent="./agent.sh"), "agent command not found")


def test_a_misspelt_field(project: Project) -> None:
    file = project.batch("b", [{"number": "1", "titel": "t"}])
    refused(project, file, "tasks[0].titel: unknown field (did you mean 'title'?)")


def test_invalid_yaml(project: Project) -> None:
    file = project.batch("b", [TASK])
    file.write_text(file.read_text() + "tasks: [unclosed\n")
    refused(project, file, "invalid YAML at line")


def test_a_duplicate_task_number(project: Project) -> None:
    file = project.batch("b", [TASK, {**TASK, "title": "again"}])
    refused(project, file, "tasks[1].number: '1' is used twice")


def test_an_unquoted_number_that_yaml_reads_as_a_float(project: Project) -> None:
    file = project.batch("b", [TASK])
    file.write_text(file.read_text().replace("number: '1'", "number: 1.10"))
    assert "1.10" in file.read_text()
    refused(project, file, 'quote it ("1.1")')


def test_a_batch_name_that_cannot_be_a_branch(project: Project) -> None:
    refused(project, project.batch("no good", [TASK]), "cannot be part of a branch name")


def test_a_file_that_is_not_a_mapping(project: Project) -> None:
    file = project.root / "list.yaml"
    file.write_text(yaml.safe_dump([1, 2]))
    refused(project, file, "expected a mapping")


def test_a_missing_file(project: Project) -> None:
    refused(project, project.root / "absent.yaml", "cannot read batch file")


def test_an_unquoted_integer_number(project: Project) -> None:
    file = project.batch("b", [TASK])
    file.write_text(file.read_text().replace("number: '1'", "number: 010"))
    refused(project, file, 'tasks[0].number: quote it ("8")')


def test_a_nul_character(project: Project) -> None:
    refused(project, project.batch("b", [{**TASK, "title": "a\0b"}]), "NUL character")


@pytest.mark.parametrize("base", ["main~1", "main^", "main@{0}"])
def test_a_base_that_is_a_revision_not_a_branch(project: Project, base: str) -> None:
    # It resolves to a commit, so it passed the check; the batch then ran its agents and
    # failed at its first merge (a ref with that name cannot be moved), store made.
    git(project.repo, "commit", "-q", "--allow-empty", "-m", "second")
    refused(project, project.batch("b", [TASK], base=base), "not a branch name")
