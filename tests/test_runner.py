"""protocol/runner.py: the one module that starts, follows and stops a server process (used by the
local pipeline and the HTTP service). A real sim job end to end, and fake server processes for
failures, stopping and the progress-line protocol."""
from __future__ import annotations

import json
import signal
import sys
import time

import pytest

from hetrain.data import load_builtin
from hetrain.protocol import files
from hetrain.protocol import runner as runner_mod
from hetrain.protocol.errors import ServerError
from hetrain.protocol.refresh_channel import ChannelError
from hetrain.protocol.events import event_line, parse_progress
from hetrain.protocol.runner import ServerFailed, ServerProcess, run_server

from jobkit import make_job


@pytest.fixture(scope="module")
def sim_bundle(tmp_path_factory):
    """A one-iteration mlr bundle on the sim backend (public material only)."""
    X, y = load_builtin("iris")
    X, y = X[::3], y[::3]
    root = tmp_path_factory.mktemp("owner")  # the keys stay in root/keys-*, beside the bundle
    kit = make_job(root, X, y, "mlr", {"iterations": 1, "sigmoid": "deg3:16"}, backend="sim", preset="n16384",
                   jobdir=tmp_path_factory.mktemp("job"))
    return kit.jobdir


@pytest.fixture
def sim_job(sim_bundle, tmp_path):
    """A fresh copy of the bundle: a trained job directory keeps its checkpoint (state.ckpt), and the
    server refuses to train it again without --resume."""
    d = tmp_path / "job"
    d.mkdir()
    for name in (files.MANIFEST, files.JOB, files.PUBLIC_CONTEXT, files.INPUTS):
        (d / name).write_bytes((sim_bundle / name).read_bytes())
    return d


def fake_server(monkeypatch, tmp_path, code: str) -> None:
    """Make ServerProcess.start run ``code`` (argv[1] = JOBDIR) instead of the real server."""
    script = tmp_path / "fake_server.py"
    script.write_text(code)
    seen = []

    def argv(jobdir, *, progress=True, trainer_modules=(), channel=None, channel_timeout=None, resume=False,
             workers=None):
        seen.append({"progress": progress, "trainer_modules": trainer_modules, "channel": channel,
                     "channel_timeout": channel_timeout, "resume": resume})
        return [sys.executable, str(script), str(jobdir)] + (["--channel", str(channel)] if channel else [])

    monkeypatch.setattr(runner_mod, "server_argv", argv)
    return seen


def test_parse_progress_is_the_one_parser_of_the_json_lines():
    def line(**f):
        return event_line("progress", f)

    assert parse_progress(line(done=3, total=10, message="epoch 1 step 3")) == (3, 10, "epoch 1 step 3")
    assert parse_progress(line(done=0, total=4)) == (0, 4, "")
    assert parse_progress('  {"progress": {"done": 1, "total": 2, "message": "a b"}}  \n') == (1, 2, "a b")
    for bad in ("3 10 x\n", "@progress 3 10 x\n", line(done="x", total=10), line(done=3), line(done=-1, total=4),
                line(done=True, total=4), event_line("other", {"done": 1, "total": 2}), "{not json\n",
                '{"progress": 3}\n', '{"progress": {"done": 1, "total": 2}, "x": 1}\n', "[1, 2]\n", "",
                line(done=1, total=2, message="x" * 70000)):
        assert parse_progress(bad) is None, bad


def test_a_real_sim_job_runs_and_reports_progress(sim_job):
    seen = []
    stats = run_server(sim_job, progress=False, on_progress=lambda d, t, m: seen.append((d, t, m)))
    assert stats["engine_has_secret_key"] is False and stats["download_bytes"] > 0
    assert (sim_job / files.OUTPUTS).exists() and seen and seen[-1][0] == seen[-1][1]
    assert (sim_job / runner_mod.LOG_NAME).exists()


def test_the_process_api_step_by_step(sim_job):
    proc = ServerProcess.start(sim_job)
    lines = []
    proc.follow(lambda d, t, m: lines.append((d, t)))
    assert proc.wait() == 0 and not proc.alive()
    assert (proc.done, proc.total) == lines[-1] and proc.result()["download_bytes"] > 0
    proc.close()


def test_resume_is_passed_to_the_server(monkeypatch, tmp_path):
    """ServerProcess.start builds the server's command with server.server_argv (the one place that
    names its entry module), passing resume, channel and channel_timeout through."""
    from hetrain.protocol import server

    built = []

    def argv(jobdir, **kw):
        built.append(server.server_argv(jobdir, **kw))
        return [sys.executable, "-c", "pass"]  # the command is checked, not run

    monkeypatch.setattr(runner_mod, "server_argv", argv)
    for kw in ({"resume": True}, {"progress": False, "trainer_modules": ("x.y",), "channel": "/s", "resume": False},
               {"channel": "/s", "channel_timeout": 5.0}):
        proc = ServerProcess.start(tmp_path, **kw)
        assert proc.wait(timeout=30) == 0
        proc.close()
    assert built[0] == server.server_argv(tmp_path, progress=True, trainer_modules=(), channel=None, resume=True)
    assert "--resume" in built[0]
    assert built[1] == server.server_argv(tmp_path, progress=False, trainer_modules=("x.y",), channel="/s")
    assert "--resume" not in built[1]
    assert built[2][-4:] == ["--channel", "/s", "--channel-timeout", "5.0"]


def test_the_servers_own_error_is_raised(monkeypatch, tmp_path):
    fake_server(monkeypatch, tmp_path, (
        "import json, pathlib, sys\n"
        "d = pathlib.Path(sys.argv[1])\n"
        "(d / 'server_error.json').write_text(json.dumps({'type': 'DepthPlanError', 'message': 'needs 9 levels',"
        " 'user_error': True, 'traceback': None}))\n"
        "sys.exit(2)\n"))
    with pytest.raises(ServerFailed, match="^server failed: needs 9 levels$") as info:
        run_server(tmp_path, progress=False)
    assert info.value.detail == "needs 9 levels" and info.value.rc == 2 and isinstance(info.value, ServerError)


def test_a_crash_without_message_gives_the_log_tail(monkeypatch, tmp_path):
    fake_server(monkeypatch, tmp_path, "import sys\nsys.stderr.write('boom: segfault-ish\\n')\nsys.exit(3)\n")
    with pytest.raises(ServerFailed, match=r"exited with status 3:\nboom: segfault-ish"):
        run_server(tmp_path, progress=False)


def test_a_bug_report_carries_the_traceback_locally_not_in_the_service(monkeypatch, tmp_path):
    fake_server(monkeypatch, tmp_path, (
        "import json, pathlib, sys\n"
        "(pathlib.Path(sys.argv[1]) / 'server_error.json').write_text(json.dumps({'type': 'KeyError', 'message': "
        "\"'W'\", 'user_error': False, 'traceback': 'Traceback: line 1'}))\n"
        "sys.exit(3)\n"))
    proc = ServerProcess.start(tmp_path)
    proc.follow()
    assert proc.wait() == 3
    assert proc.error_detail() == "KeyError: 'W'\nTraceback: line 1"
    with pytest.raises(ServerFailed) as info:
        proc.result(traceback=False)
    assert info.value.detail == "KeyError: 'W'"


def test_a_progress_callback_that_fails_does_not_block_the_server(monkeypatch, tmp_path):
    # 20,000 lines overflow any pipe buffer: a reader that stopped reading would hang the server
    fake_server(monkeypatch, tmp_path, (
        "import json, pathlib, sys\n"
        "from hetrain.protocol.events import write_progress\n"
        "for i in range(20000): write_progress(sys.stdout, i, 20000, 'step')\n"
        "(pathlib.Path(sys.argv[1]) / 'server_stats.json').write_text(json.dumps({'ok': 1}))\n"))
    calls = []

    def bad(done, total, message):
        calls.append(done)
        raise OSError("terminal gone")

    assert run_server(tmp_path, progress=False, on_progress=bad) == {"ok": 1}
    assert calls == [0]


def test_stop_is_polite_then_kills(monkeypatch, tmp_path):
    fake_server(monkeypatch, tmp_path, (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"))
    proc = ServerProcess.start(tmp_path)
    assert proc.popen.stdout.readline() == "ready\n"
    t0 = time.monotonic()
    assert proc.stop(grace=0.5) == -signal.SIGKILL and time.monotonic() - t0 < 10
    proc.close()


def test_during_runs_while_the_server_runs_and_its_failure_stops_it(monkeypatch, tmp_path):
    seen = fake_server(monkeypatch, tmp_path, "import time\ntime.sleep(60)\n")

    def during(proc):
        assert proc.alive()
        raise RuntimeError("the client refused the state")

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="client refused"):
        run_server(tmp_path, progress=False, during=during, channel=tmp_path / "ch.sock")
    assert time.monotonic() - t0 < 30 and seen[-1]["channel"] == tmp_path / "ch.sock"


def test_a_broken_channel_reports_the_servers_error(monkeypatch, tmp_path):
    fake_server(monkeypatch, tmp_path, (
        "import json, pathlib, sys, time\n"
        "time.sleep(0.5)\n"
        "(pathlib.Path(sys.argv[1]) / 'server_error.json').write_text(json.dumps({'type': 'ChannelError', "
        "'message': 'no data owner for 3600 s', 'user_error': True}))\n"
        "sys.exit(2)\n"))

    def during(proc):
        raise ChannelError("the other side closed the refresh channel")

    with pytest.raises(ServerFailed, match="no data owner for 3600 s"):
        run_server(tmp_path, progress=False, during=during)
    # without a message of its own, the channel's error is named
    fake_server(monkeypatch, tmp_path, "import sys\nsys.exit(5)\n")
    with pytest.raises(ServerFailed, match=r"status 5 during training \(refresh channel: the other side closed"):
        run_server(tmp_path, progress=False, during=during)


def test_unreadable_stats_after_a_clean_exit_are_an_error(monkeypatch, tmp_path):
    fake_server(monkeypatch, tmp_path, "pass\n")
    with pytest.raises(ServerFailed, match="stats are unreadable"):
        run_server(tmp_path, progress=False)
    assert json.loads("{}") == {}


def test_run_server_with_the_listening_channel_answered_during_the_run(tmp_path):
    """What the local pipeline does with client refresh: the server listens at channel_location,
    this process answers in ``during`` (serve_socket) while the runner follows the progress."""
    import numpy as np

    from hetrain.protocol.refresh_channel import channel_location, serve_socket

    X, y = load_builtin("iris")
    # mini-batch mlr, all 150 rows trained (no validation rows): 3 batches of 64, 2 epochs
    kit = make_job(tmp_path, X, y, "mlr", {"epochs": 2, "batch_size": 64, "learning_rate": 0.5, "patience": 0},
                   backend="sim", preset="n16384", refresh="client", plan=False, validation_fraction=0.0)
    assert kit.job.Xp.shape[0] == 150 and kit.job.Xv is None
    path = channel_location(kit.jobdir)
    handler = kit.handler  # checks each refreshed state; nothing to evaluate
    seen, answered = [], []

    def during(proc):
        answered.append(serve_socket(path, kit.engine, handler, kit.job_id, alive=proc.alive))

    stats = run_server(kit.jobdir, progress=False, channel=path, during=during,
                       on_progress=lambda d, t, m: seen.append(d))
    steps = stats["trainer"]["steps"]
    assert steps == 6 and stats["refresh"]["round_trips"] == steps - 1 == answered[0].refreshes
    assert seen[-1] == steps and not path.exists()
    assert np.isfinite(stats["server_train_s"])
