"""The suite itself cannot hang: every test runs under a time limit, a hung test fails with the
stacks of its threads and the run goes on, and no test forks the pytest process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

HUNG_WORKER = """
import multiprocessing
import time


def never_returns() -> None:
    time.sleep(3600)


def test_a_worker_that_never_exits() -> None:
    worker = multiprocessing.get_context("spawn").Process(target=never_returns, daemon=True)
    worker.start()
    worker.join()


def test_the_next_test_still_runs() -> None:
    pass
"""


def test_every_test_runs_under_a_time_limit_of_at_most_five_minutes() -> None:
    project = (REPO_ROOT / "pyproject.toml").read_text()
    # The pytest section: from its header to the next line that opens a table.
    pytest_options = project.split("\n[tool.pytest.ini_options]\n", 1)[1].split("\n[", 1)[0]
    limit = re.search(r"^timeout = (\d+)$", pytest_options, re.M)
    assert limit is not None and 0 < int(limit.group(1)) <= 300
    assert re.search(r'^dev = \[.*"pytest-timeout[>=]', project, re.M)


def test_a_hung_worker_fails_its_test_with_a_stack_and_the_run_returns(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HUNG_WORKER)
    # The limit as the project's configuration sets it, shortened: the mechanism under test is
    # the plugin that `make install` brings, reading the `timeout` option.
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "timeout=3", "-rA"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    output = finished.stdout
    assert finished.returncode == 1, output[-2000:]
    assert re.search(r"1 failed, 1 passed", output), output[-2000:]
    assert "Timeout" in output and "worker.join()" in output, output[-2000:]


def test_no_test_forks_the_pytest_process() -> None:
    # A fork copies the locks other threads hold at that instant; the child can wait on one for
    # ever. A forking strategy may run only inside a child process (``in_child=True``).
    forking = re.compile(r"get_context\(\s*['\"]fork['\"]\s*\)|os\.fork\(|set_start_method\(")
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((REPO_ROOT / "tests").glob("*.py"))
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if forking.search(line)
    ]
    assert offenders == []
