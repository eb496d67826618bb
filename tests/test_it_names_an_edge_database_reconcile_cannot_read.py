"""reconcile on an edge database it can't read says so in one line, as runedge does, not in a traceback.

Not an edge_db test: each case names its own database, never the session's.
"""

import pytest

from tests.conftest import run_manage


@pytest.mark.parametrize("database, said", [
    ("sqlite:///{tmp}/never-migrated.sqlite3", "never-migrated.sqlite3) lacks"),
    ("postgres://fog:pw@127.0.0.1:1/fog", "(postgresql fog at 127.0.0.1:1) can't be read: "),  # nobody on port 1
])
def test_it_names_an_edge_database_it_cannot_read_instead_of_a_traceback(database, said, tmp_path):
    # The check runedge makes before its loops start (fogsite/edge_database.py), in one line.
    result = run_manage("reconcile", env={"FOG_DATABASE_URL": database.format(tmp=tmp_path)}, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith("CommandError: the edge database (") and said in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
