"""The server as a process: how it is started (python -m entry modules) and how it stops when the
process reading its output goes away."""
from __future__ import annotations

import ast
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import psutil
import pytest
from toykit import ToyTrainer

from hetrain.data import load_builtin
from hetrain.models.base import register
from hetrain.protocol import files, fit
from hetrain.protocol.events import parse_progress
from hetrain.protocol.server import server_argv

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
REPO = SRC.parent


@register
class SlowToyTrainer(ToyTrainer):
    """toy-centroid that first reports HETRAIN_TEST_SLOW_STEPS progress lines, one per 10 ms."""
    name = "toy-slow"

    def server_train(self, engine, inputs, job, progress=None):
        steps = int(os.environ.get("HETRAIN_TEST_SLOW_STEPS", "1"))
        for t in range(1, steps + 1):
            if progress:
                progress(t, steps, "waiting")
            time.sleep(0.01)
        return super().server_train(engine, inputs, job, progress)


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}


@pytest.fixture(scope="module")
def slow_job(tmp_path_factory):
    X, y = load_builtin("iris")
    job = tmp_path_factory.mktemp("slow") / "job"
    fit(X, y, "toy-slow", {"iterations": 1}, preset="n16384", backend="sim", progress=False, workdir=job)
    return job


# ------------------------------------------------------------------ item 9: python -m entry points
def _entry_modules() -> list[str]:
    """Every module under src/ with an ``if __name__ == "__main__":`` block (run with python -m)."""
    mods = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body):
            mods.append(".".join(path.relative_to(SRC).with_suffix("").parts))
    return mods


def test_the_server_command_runs_an_entry_module():
    assert "hetrain.protocol.server_main" in _entry_modules()
    assert "hetrain.cli.main" in _entry_modules()


@pytest.mark.parametrize("module", _entry_modules())
def test_no_entry_module_is_imported_by_its_package(module):
    """``python -m pkg.mod`` first imports pkg; if pkg's __init__ imports mod, runpy warns
    ("found in sys.modules ... unpredictable behaviour") and runs a second copy of it."""
    package = module.rpartition(".")[0]
    code = f"import sys, {package}; print({module!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"{package} imports {module}: python -m {module} warns"


def test_server_log_has_no_runpy_warning(slow_job, tmp_path):
    log = (slow_job / "server.log").read_text()
    assert "RuntimeWarning" not in log and "sys.modules" not in log, log
    # and the command every caller builds runs cleanly with runtime warnings as errors
    cmd = server_argv(slow_job, trainer_modules=['test_server_process'])
    cmd[1:1] = ["-W", "error::RuntimeWarning"]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning" not in out.stderr


# ------------------------------------------------------------------ item 10: the reader goes away
def _start_slow_server(job: pathlib.Path, stderr):
    (job / files.SERVER_ERROR).unlink(missing_ok=True)
    cmd = server_argv(job, trainer_modules=['test_server_process'])
    proc = subprocess.Popen(cmd, env={**_env(), "HETRAIN_TEST_SLOW_STEPS": "100000"}, stdout=subprocess.PIPE,
                            stderr=stderr, stdin=subprocess.DEVNULL, text=True)
    assert parse_progress(proc.stdout.readline()) is not None  # it is training and reporting
    return proc


def _assert_one_line_stop(stderr_text: str, job: pathlib.Path) -> None:
    assert "Traceback" not in stderr_text and "Exception ignored" not in stderr_text, stderr_text
    lines = [ln for ln in stderr_text.splitlines() if ln.strip() and not ln.startswith("server INFO: ")]
    assert len(lines) == 1 and lines[0].startswith("server error:") and "gone" in lines[0], stderr_text
    err = json.loads((job / files.SERVER_ERROR).read_text())
    assert err["user_error"] and not err["traceback"] and "gone" in err["message"]
    assert not (job / files.OUTPUTS).exists() or (job / files.OUTPUTS).stat().st_mtime < (job / files.SERVER_ERROR).stat().st_mtime


def test_server_stops_with_one_line_when_its_stdout_reader_closes(slow_job):
    proc = _start_slow_server(slow_job, subprocess.PIPE)
    proc.stdout.close()  # the reader of its progress lines is gone
    rc = proc.wait(timeout=60)
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert rc not in (0, 3) and rc > 0, (rc, stderr)
    _assert_one_line_stop(stderr, slow_job)


def test_server_stops_with_one_line_when_its_parent_is_killed(slow_job, tmp_path):
    """A parent (like `hetrain fit` or the service) that dies by SIGKILL while the server trains."""
    log = tmp_path / "server.log"
    parent = (
        "import os, signal, subprocess, sys\n"
        "from test_server_process import _start_slow_server\n"
        f"proc = _start_slow_server(__import__('pathlib').Path({str(slow_job)!r}), open({str(log)!r}, 'wb'))\n"
        "print(proc.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", parent], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    pid = int(out.stdout.split()[0])
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the server kept running after its parent died")
    _assert_one_line_stop(log.read_text(), slow_job)


@pytest.mark.parametrize("argv", [["datasets", "list"], ["datasets", "export", "iris", "--out", "iris.csv"]])
def test_cli_output_into_a_closed_pipe_prints_no_traceback(argv, tmp_path):
    cmd = [sys.executable, "-m", "hetrain.cli.main", *[a.replace("iris.csv", str(tmp_path / "iris.csv")) for a in argv]]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `hetrain datasets list | head -0`: the reader is gone before any output
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    rc = proc.wait(timeout=60)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert rc != 0
