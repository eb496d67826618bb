"""The suite's own hygiene, run on a small session of its own: a process a test leaves behind is named and
killed when the session ends, which fails the session, also when it is stopped by SIGTERM; in a parallel
run (tests/parallel.py) too, where a stopped run's workers still finish their teardown."""

import configparser
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, SESSION_ENV, alive, wait_for

LEAKY = '''
import subprocess, time

import pytest


@pytest.fixture
def slow_teardown():
    yield
    time.sleep({teardown})  # an interrupted parallel run's worker gets this long (xdist alone would give ~15 s)
    open({done!r}, "w").close()


def test_leaves_a_process(slow_teardown):
    subprocess.Popen(["sleep", "{seconds}"], start_new_session=True)  # out of reach of a terminal's Ctrl-C
    time.sleep({wait})
'''
PARALLEL = ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]  # as `make test` runs the suite
SLOWER_THAN_XDIST_WAITS_S = 17
TEARDOWN_S = 3  # long enough for a second SIGTERM to land in it


def _skipped_plugins():
    """pytest.ini's `-p no:...`: the nested session reads no pytest.ini (its rootdir is its own), and would load
    the plugins the suite skips, at seconds of CPU."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "pytest.ini")
    args = shlex.split(parser["pytest"]["addopts"])
    return [arg for flag, name in zip(args, args[1:]) if flag == "-p" and name.startswith("no:") for arg in (flag, name)]


def _session(tmp_path, wait, options=(), teardown=0, **popen):
    seconds = 300 + (os.getpid() + len(options)) % 1000  # a command line this test can tell apart from any other
    (tmp_path / "test_leaky.py").write_text(LEAKY.format(seconds=seconds, wait=wait, teardown=teardown,
                                                         done=str(tmp_path / "torn-down")))
    env = {k: v for k, v in os.environ.items() if k != SESSION_ENV}  # its own marker, not ours
    env.update(DJANGO_SETTINGS_MODULE="fogsite.settings", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *_skipped_plugins(), "-p", "tests.conftest",
                             str(tmp_path / "test_leaky.py"), "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                             *options], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return proc, f"sleep {seconds}"


def _reported_pid(out, command):
    match = re.search(rf"pid (\d+): {command}", out)
    assert "process(es) this session started outlived it (now killed)" in out and match, out
    return int(match.group(1))


@pytest.mark.parametrize("options", [(), PARALLEL], ids=["serial", "parallel"])
def test_it_names_and_kills_a_survivor_at_the_end_and_fails_the_run(tmp_path, options):
    proc, command = _session(tmp_path, wait=0, options=options)
    out, _ = proc.communicate(timeout=120)
    pid = _reported_pid(out, command)
    assert wait_for(lambda: not alive(pid), timeout=10)
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED and "1 passed" in out, out


def test_it_ends_a_survivor_when_the_session_is_stopped_by_sigterm(tmp_path):
    """Twice, as a SIGTERM to a whole process group reaches a session behind scripts/alongside.sh (directly, and
    passed on by the script): the second lands in the teardown the first began, and leaves it to finish."""
    proc, command = _session(tmp_path, wait=120, teardown=TEARDOWN_S)
    try:
        assert wait_for(lambda: subprocess.run(["pgrep", "-f", f"^{command}$"], capture_output=True).returncode == 0,
                        timeout=60, interval=0.2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(TEARDOWN_S / 3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    pid = _reported_pid(out, command)
    assert wait_for(lambda: not alive(pid), timeout=10)
    assert (tmp_path / "torn-down").exists(), out  # the fixture ran to its end


def test_it_lets_each_worker_of_a_parallel_run_finish_its_teardown_when_stopped_by_sigterm(tmp_path):
    proc, command = _session(tmp_path, wait=120, options=PARALLEL, teardown=SLOWER_THAN_XDIST_WAITS_S,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # as `make test &` runs
    try:
        assert wait_for(lambda: subprocess.run(["pgrep", "-f", f"^{command}$"], capture_output=True).returncode == 0,
                        timeout=60, interval=0.2)
        proc.send_signal(signal.SIGTERM)  # to the controller only, as a CI runner stops a job
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    pid = _reported_pid(out, command)
    assert wait_for(lambda: not alive(pid), timeout=10)
    assert (tmp_path / "torn-down").exists(), out  # the worker's fixture ran to its end
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out


def test_it_signals_no_process_a_dead_workers_pid_file_names_since(tmp_path):
    """A worker that died without its mark leaves its pid file, and its pid may be another process's since: an
    interrupted run's controller would have sent it SIGTERM and waited for it."""
    from tests.parallel import Controller

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "gw0.pid").write_text(str(stranger.pid))
        assert Controller(tmp_path, wait_for)._running() == []
    finally:
        stranger.kill()
        stranger.wait()


def test_it_finds_a_process_the_moment_it_was_started():
    """Popen returns while its child is still inside exec(), whose environment /proc then reads as empty (about one
    start in seven here): a test that left a process as it ended went unnamed, and its session passed."""
    from edge_app.processes import has_environment

    missed = 0
    for _ in range(100):
        child = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            missed += not has_environment(child.pid, SESSION_ENV, os.environ[SESSION_ENV])
        finally:
            child.kill()
            child.wait()
    assert missed == 0
