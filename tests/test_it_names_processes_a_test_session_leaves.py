"""The suite's own hygiene, run on a small session of its own: a process a test leaves behind is named and
killed when the session ends, also when the session is stopped by SIGTERM."""

import os
import re
import signal
import subprocess
import sys

from tests.conftest import ROOT, SESSION_ENV, alive, wait_for

LEAKY = '''
import subprocess, time

def test_leaves_a_process():
    subprocess.Popen(["sleep", "{seconds}"], start_new_session=True)  # out of reach of a terminal's Ctrl-C
    time.sleep({wait})
'''


def _session(tmp_path, wait):
    seconds = 300 + os.getpid() % 1000  # a command line this test can tell apart from any other
    (tmp_path / "test_leaky.py").write_text(LEAKY.format(seconds=seconds, wait=wait))
    env = {k: v for k, v in os.environ.items() if k != SESSION_ENV}  # its own marker, not ours
    env.update(DJANGO_SETTINGS_MODULE="fogsite.settings", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "tests.conftest", str(tmp_path / "test_leaky.py"),
                             "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, f"sleep {seconds}"


def _reported_pid(out, command):
    match = re.search(rf"pid (\d+): {command}", out)
    assert "process(es) this session started outlived it (now killed)" in out and match, out
    return int(match.group(1))


def test_it_names_and_kills_a_survivor_at_the_end(tmp_path):
    proc, command = _session(tmp_path, wait=0)
    out, _ = proc.communicate(timeout=120)
    pid = _reported_pid(out, command)
    assert wait_for(lambda: not alive(pid), timeout=10)


def test_it_ends_a_survivor_when_the_session_is_stopped_by_sigterm(tmp_path):
    proc, command = _session(tmp_path, wait=120)
    try:
        assert wait_for(lambda: subprocess.run(["pgrep", "-f", f"^{command}$"], capture_output=True).returncode == 0,
                        timeout=60, interval=0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    pid = _reported_pid(out, command)
    assert wait_for(lambda: not alive(pid), timeout=10)
