"""A benchmark stopped by SIGTERM (a cancelled CI job, `timeout`) or SIGHUP (a closed terminal) stops the
pipeline it started, as Ctrl-C does; a second signal while it cleans up does not cut the cleanup short."""

import os
import signal
import subprocess
import time
import sys
import uuid

import pytest

from tests.conftest import ROOT, alive, wait_for, with_environment

PROBE = "BENCH_TEST_PROBE"  # marks this test's processes


def _ignore_sighup():
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a command


def _default_sighup():
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # whether or not this test session runs under nohup


@pytest.mark.parametrize("first, nohup", [(signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGTERM, True)])
def test_it_stops_every_process_of_a_benchmark_stopped_by_a_signal(tmp_path, first, nohup):
    probe = uuid.uuid4().hex
    with open(tmp_path / "bench.log", "wb") as log:
        command = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "bench", "latency", "--households", "30",
                                    "--seconds", "300"], cwd=ROOT, env={**os.environ, PROBE: probe}, stdout=log,
                                   stderr=subprocess.STDOUT, preexec_fn=_ignore_sighup if nohup else _default_sighup)
    started = {}
    try:
        def edge_runs():
            started.update(with_environment(PROBE, probe))
            return any("runedge" in cmdline for pid, cmdline in started.items() if alive(pid))

        assert wait_for(edge_runs, timeout=120), (tmp_path / "bench.log").read_text()
        if nohup:  # a closed terminal does not stop a benchmark started under nohup
            command.send_signal(signal.SIGHUP)
            assert not wait_for(lambda: command.poll() is not None, timeout=3)
        command.send_signal(first)
        wait_for(lambda: "stopping; cleaning up" in (tmp_path / "bench.log").read_text(), timeout=10)
        command.send_signal(signal.SIGINT)  # impatient: ignored while it cleans up
        assert command.wait(120) != 0
        assert wait_for(lambda: not with_environment(PROBE, probe), timeout=15), with_environment(PROBE, probe)
        assert f"{signal.Signals(first).name}: stopping" in (tmp_path / "bench.log").read_text()
    finally:  # also when an assertion failed: nothing of it may outlive the test
        if command.poll() is None:
            command.kill()
            command.wait(10)
        for pid in {**started, **with_environment(PROBE, probe)}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_it_lets_a_stop_wait_until_the_child_it_is_starting_is_recorded():
    """The stop that failed a loaded run: a signal between a child's fork and its recording left a simulation
    no cleanup knew of. Now the stop is raised once the child is recorded, where `finally` can end it."""
    from tooling.bench import common
    from tooling.signals import CHILDREN, SIGNALS, stop_on_signals

    handlers = {each: signal.getsignal(each) for each in SIGNALS}
    proc = None
    try:
        stop_on_signals(lambda line: None)
        with pytest.raises(KeyboardInterrupt):
            try:
                proc = common.manage("help", "runedge", stdout=subprocess.DEVNULL, env={PROBE: uuid.uuid4().hex},
                                     preexec_fn=lambda: os.kill(os.getppid(), signal.SIGTERM))  # mid-start
            finally:
                assert proc is None  # it never reached its caller...
    finally:  # this session's own handlers back at once: the stop left every signal ignored
        for each, handler in handlers.items():
            signal.signal(each, handler)
    started = [each for each in CHILDREN if "runedge" in " ".join(each.args)]
    assert len(started) == 1 and started[0].wait(60) == 0  # ...but the run has it, and its exit would end it


def test_it_stops_though_it_cannot_say_so():
    """The terminal that sent SIGHUP is gone: writing the stop's line fails (EIO). That failure must not take
    the stop's place, or a step that catches OSError (a port probe) would swallow the stop, with every signal
    ignored from then on."""
    from tooling.signals import SIGNALS, stop_on_signals

    def hung_up(line):
        raise OSError(5, "Input/output error")

    handlers = {each: signal.getsignal(each) for each in SIGNALS}
    try:
        stop_on_signals(hung_up)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)  # the handler runs at the next bytecode; this only bounds a failure
    finally:
        for each, handler in handlers.items():
            signal.signal(each, handler)
