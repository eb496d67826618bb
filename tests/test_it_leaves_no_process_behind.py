"""Runs last (conftest orders it so): no process the suite started is still alive.

Every process the suite starts inherits this session's marker (FOG_TEST_SESSION); other
sessions on the machine have other markers. The shared Kafka and Redis are started without it.
"""

from tests.conftest import session_processes, wait_for


def test_it_leaves_no_process_behind():
    # A process that was just told to stop gets a few seconds to finish.
    wait_for(lambda: not session_processes(), timeout=15, interval=0.5)
    survivors = session_processes()
    assert not survivors, "still running after every test ended:\n" + "\n".join(
        f"  pid {pid}: {cmdline}" for pid, cmdline in sorted(survivors.items()))
