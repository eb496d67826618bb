"""The edge's writers take turns at its SQLite file (fogsite/backends/sqlite3): a process committing
transaction after transaction, as the ingest does with a window end's parts, no longer holds another writer off
until it is done, and a transaction that fails gives its turn back."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

PARTS, HOLD_S = 20, 0.05  # the writer's run: 20 transactions of 50 ms, one straight after the other

SCRIPT = """
import json, sys, time
import django
django.setup()
from django.db import connection, transaction

role, parts, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS turns (who TEXT)")

def rows(who):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM turns WHERE who = %s", [who])
        return cursor.fetchone()[0]

if role == "burst":
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(parts):
        with transaction.atomic():
            deadline = time.perf_counter() + hold
            while time.perf_counter() < deadline:
                pass
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO turns VALUES ('burst')")
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO turns VALUES ('done')")
elif role == "other":
    while not rows("burst"):
        time.sleep(0.001)
    waits = []
    while not rows("done"):
        asked = time.perf_counter()
        with transaction.atomic():
            waits.append(time.perf_counter() - asked)
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO turns VALUES ('other')")
        time.sleep(0.005)
    print(json.dumps({"waits": waits, "burst_rows": rows("burst")}))
elif role == "fails":
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO turns VALUES ('fails')")
            raise RuntimeError("the transaction fails")
    except RuntimeError:
        pass
    print(json.dumps({"held": connection.turns.held, "rows": rows("fails")}))
"""


def _child(role, database, **popen):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "fogsite.settings", "FOG_DATABASE_URL": f"sqlite:///{database}"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, role, str(PARTS), str(HOLD_S)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True, **popen)


def test_it_lets_a_writer_in_between_another_writers_transactions(tmp_path):
    database = tmp_path / "edge.sqlite3"
    burst = _child("burst", database, stdin=subprocess.PIPE)
    try:
        assert burst.stdout.readline().strip() == "ready"  # the table is there before the other looks
        other = _child("other", database)
        burst.stdin.write("go\n")
        burst.stdin.flush()
        result = json.loads(other.communicate(timeout=60)[0])
        assert burst.wait(timeout=60) == 0
    finally:
        burst.kill()
    assert result["burst_rows"] == PARTS
    # SQLite's own busy handler alone keeps the other waiting for nearly the whole run (PARTS * HOLD_S = 1 s),
    # since it sleeps through the moments between the burst's transactions.
    assert len(result["waits"]) >= PARTS // 2, result
    assert max(result["waits"]) < PARTS * HOLD_S / 2, result


def test_it_gives_the_turn_back_when_a_transaction_fails(tmp_path):
    database = tmp_path / "edge.sqlite3"
    failing = _child("fails", database)
    result = json.loads(failing.communicate(timeout=60)[0])
    assert result == {"held": False, "rows": 0}
    assert (tmp_path / "edge.sqlite3-turn").exists() and (tmp_path / "edge.sqlite3-gate").exists()
