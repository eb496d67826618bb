"""scripts/alongside.sh, which `make test` runs the parallel pass with, behind the serial pass: both outputs
shown, either's failure fails it, and a Ctrl-C or a SIGTERM ends both, never one alone. The recipe keeps the
serial pass in front at full priority, and gives each session ports of its own."""

import os
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT, wait_for
from tests.test_it_runs_the_edge_database_tests_on_both_engines import make_test_runs

SCRIPT = ROOT / "scripts" / "alongside.sh"


def _as_from_a_terminal():
    # make's commands take SIGINT by default; a pytest-xdist worker's children would inherit it ignored, and a
    # script can't trap a signal it was started ignoring.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def alongside(tmp_path, background, foreground, **popen):
    return subprocess.Popen([str(SCRIPT), str(tmp_path / "log" / "back.log"), "sh", "-c", background, "--", "sh",
                             "-c", foreground], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_terminal, **popen)


@pytest.mark.parametrize("back, fore, status", [(0, 0, 0), (3, 0, 3), (0, 5, 5), (3, 5, 5)])
def test_it_shows_both_outputs_and_fails_with_either(tmp_path, back, fore, status):
    run = alongside(tmp_path, f"echo from-back; exit {back}", f"sleep 0.2; echo from-fore; exit {fore}")
    out, err = run.communicate(timeout=30)
    assert run.returncode == status, err
    assert out.index("from-fore") < out.index("from-back")  # the background's output after, whole
    assert ("the background command failed" in err) == (back != 0 and fore == 0)


@pytest.mark.parametrize("back, fore, status", [(3, 0, 3), (0, 5, 5), (3, 5, 5)])
def test_it_takes_each_status_when_both_end_at_once(tmp_path, back, fore, status):
    for _ in range(5):  # both reaped before the script asks for either, some of the times
        run = alongside(tmp_path, f"exit {back}", f"exit {fore}")
        run.communicate(timeout=30)
        assert run.returncode == status


def test_it_refuses_a_command_line_without_both_commands(tmp_path):
    for args in ([], ["log"], ["log", "true"], ["log", "true", "--"]):
        run = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=10)
        assert run.returncode == 2 and "usage: alongside.sh" in run.stderr


def test_it_refuses_a_log_it_cannot_write(tmp_path):
    run = subprocess.run([str(SCRIPT), str(tmp_path), "true", "--", "true"], capture_output=True, text=True,
                         timeout=10)  # a folder
    assert run.returncode == 2 and "can't write" in run.stderr


@pytest.mark.parametrize("how, status", [("ctrl-c", 130), ("sigterm", 143)])
def test_it_ends_both_when_stopped_and_outlives_neither(tmp_path, how, status):
    # Each command one process (`exec`), as the Makefile's pytest sessions are.
    back, fore = tmp_path / "back.pid", tmp_path / "fore.pid"
    run = alongside(tmp_path, f"echo $$ > {back}; exec sleep 300", f"echo $$ > {fore}; exec sleep 300",
                    start_new_session=True)
    try:
        wait_for(lambda: back.exists() and fore.exists() and back.read_text() and fore.read_text(), timeout=10)
        time.sleep(0.3)  # the exec done
        pids = [int(back.read_text()), int(fore.read_text())]
        if how == "ctrl-c":  # a terminal sends it to the whole foreground process group
            os.killpg(run.pid, signal.SIGINT)
        else:  # to the script alone, as make and CI runners stop a command
            run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=15)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
    assert run.returncode == status and "stopped by a signal" in err, err
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), pid  # ended, and reaped by the script


def test_it_says_no_stop_that_did_not_happen(tmp_path):
    # A SIGINT to the script alone (not from a terminal, which sends it to the group): both run to their end.
    run = alongside(tmp_path, "exec sleep 1", "exec sleep 1.5")
    time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=15)
    assert run.returncode == 0 and "stopped" not in err, err


def test_it_runs_the_serial_tests_in_front_the_others_behind_them_and_the_postgresql_pass_alone_after():
    """Behind the serial tests at full priority, the parallel pass takes only what they leave (nice 19) and picks its
    harness ports from a share the serial session does not pick from (FOG_TEST_PORT_SHARE); the PostgreSQL pass
    runs after both, alone."""
    runs, recipe = make_test_runs()
    lines = {}
    for prefix, number, run in runs:
        lines.setdefault(number, []).append((prefix, run))
    together = {number: line for number, line in lines.items() if len(line) > 1}
    assert len(together) == 1, recipe
    [(alongside_line, line)] = together.items()
    assert len(line) == 2, recipe
    (behind, background), (front, foreground) = line
    assert behind[0].endswith("scripts/alongside.sh") and behind[1].endswith(".log"), recipe
    assert foreground[foreground.index("-m") + 1] == "serial" and "nice" not in front, recipe
    assert background[background.index("-m") + 1] == "not serial", recipe
    assert " nice -n 19 " in f" {' '.join(behind)} ", recipe
    assert {word for word in behind + front if word.startswith("FOG_TEST_PORT_SHARE=")} == {
        "FOG_TEST_PORT_SHARE=1/2", "FOG_TEST_PORT_SHARE=0/2"}, recipe
    postgres = [(number, prefix) for prefix, number, run in runs if "--edge-database" in run]
    assert len(postgres) == 1 and postgres[0][0] > alongside_line and postgres[0][1] == [], recipe
