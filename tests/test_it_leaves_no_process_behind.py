"""Runs last (conftest orders it so): no process the suite started is still alive.

Every process the suite starts inherits this session's marker (FOG_TEST_SESSION); other
sessions on the machine have other markers. The shared Kafka and Redis are started without it.
The one exception is the PostgreSQL a `--edge-database postgres` session still owns: its session
fixture stops it after this test (tests/edge_database.py), and the session's exit kills it if not.
"""

import pytest

from tests.conftest import session_processes, wait_for
from tests.edge_database import owned_server_pids

pytestmark = pytest.mark.serial  # the serial pass's last test; a parallel run's controller checks its workers


def survivors():
    owned = owned_server_pids()
    return {pid: cmdline for pid, cmdline in session_processes().items() if pid not in owned}


@pytest.mark.edge_db  # the PostgreSQL pass (`-m edge_db`) ends with this check too
def test_it_leaves_no_process_behind(session_postgres):  # the server outlives this test, owned by its fixture
    # A process that was just told to stop gets a few seconds to finish.
    wait_for(lambda: not survivors(), timeout=15, interval=0.5)
    left = survivors()
    assert not left, "still running after every test ended:\n" + "\n".join(
        f"  pid {pid}: {cmdline}" for pid, cmdline in sorted(left.items()))
