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
if role != "waits":  # the waiter writes nothing before its one transaction
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS turns (who TEXT)")

def turn_free():
    import fcntl, os
    probe = os.open(f"{connection.settings_dict['NAME']}-turn", os.O_RDWR)  # another open file: another waiter
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(probe)

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
    print("ready", flush=True)
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
elif role == "holds":  # holds a transaction open until told to end it
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO turns VALUES ('holds')")
        print("holding", flush=True)
        sys.stdin.readline()
elif role == "waits":  # a second writer with a busy timeout of 1 s
    connection.settings_dict["OPTIONS"]["timeout"] = 1
    asked = time.perf_counter()
    try:
        with transaction.atomic():
            pass
        outcome = "went in"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"outcome": outcome, "waited": time.perf_counter() - asked}))
elif role == "fails":
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO turns VALUES ('fails')")
            raise RuntimeError("the transaction fails")
    except RuntimeError:
        pass
    print(json.dumps({"free": turn_free(), "rows": rows("fails")}))
elif role == "manual":  # autocommit off: the sqlite3 module begins a transaction before the first write
    transaction.set_autocommit(False)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO turns VALUES ('manual')")
    during = turn_free()
    transaction.commit()
    print(json.dumps({"during": during, "after": turn_free()}))
"""


def _child(role, database, **popen):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "fogsite.settings", "FOG_DATABASE_URL": f"sqlite:///{database}",
           "FOG_SQLITE_TURNS": "on"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, role, str(PARTS), str(HOLD_S)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True, **popen)


def test_it_lets_a_writer_in_between_another_writers_transactions(tmp_path):
    database = tmp_path / "edge.sqlite3"
    burst = other = _child("burst", database, stdin=subprocess.PIPE)
    try:
        assert burst.stdout.readline().strip() == "ready"  # the table is there before the other looks
        other = _child("other", database)
        assert other.stdout.readline().strip() == "ready"  # Django set up: it starts looking before the burst
        burst.stdin.write("go\n")
        burst.stdin.flush()
        result = json.loads(other.communicate(timeout=60)[0])
        assert burst.wait(timeout=60) == 0
    finally:
        burst.kill()
        other.kill()
    assert result["burst_rows"] == PARTS
    # SQLite's own busy handler alone keeps the other waiting for nearly the whole run (PARTS * HOLD_S = 1 s),
    # since it sleeps through the moments between the burst's transactions.
    assert len(result["waits"]) >= PARTS // 2, result
    assert max(result["waits"]) < PARTS * HOLD_S / 2, result


def test_it_gives_up_waiting_for_a_turn_after_the_busy_timeout(tmp_path):
    """A writer that never ends its transaction (a shell left in atomic()) makes the others fail as SQLite's own
    lock would, after the busy timeout, instead of hanging them for good."""
    database = tmp_path / "edge.sqlite3"
    holder = _child("holds", database, stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = json.loads(_child("waits", database).communicate(timeout=60)[0])
    finally:
        holder.kill()
    assert result["outcome"].startswith("OperationalError: database is locked"), result
    assert 1 <= result["waited"] < 10, result


def test_it_keeps_the_turn_for_a_transaction_of_autocommit_off_until_its_commit(tmp_path):
    result = json.loads(_child("manual", tmp_path / "edge.sqlite3").communicate(timeout=60)[0])
    assert result == {"during": False, "after": True}


def test_it_gives_the_turn_back_when_a_transaction_fails(tmp_path):
    database = tmp_path / "edge.sqlite3"
    failing = _child("fails", database)
    result = json.loads(failing.communicate(timeout=60)[0])
    assert result == {"free": True, "rows": 0}
    assert (tmp_path / "edge.sqlite3-turn").exists() and (tmp_path / "edge.sqlite3-gate").exists()
