"""Django's SQLite backend, with writers that take turns.

SQLite lets one writer in at a time. One that finds the lock taken waits in SQLite's busy handler, which
sleeps in steps that grow to 100 ms and looks again only when it wakes. A writer that commits transaction
after transaction frees the lock for a moment between them, too short for a sleeper to see: the edge's
ingest storing a window end's burst in parts held the sender off for the whole burst, and the sender's
claims and acknowledgements held the ingest off in turn. The parts were meant to let the sender start on
the first while the rest was written.

So every write here first takes a turn: every transaction, and every write statement outside one (a
heartbeat's UPDATE must not be left to the busy handler either, between writers that now hand the lock over
with no gap). A turn is a lock in the kernel (flock on `<database>-turn`), looked at every
millisecond or two. A waiter holds a second lock, the gate (`<database>-gate`), while it waits, and a writer
takes the gate before the turn: one that has just committed cannot take its turn straight back past a
waiter. Each connection opens the two files itself (flock locks belong to an open file), so the processes
and threads on one database file wait for each other; whoever holds the gate goes next. A wait for a turn
gives up after the connection's busy timeout with SQLite's own "database is locked", as a wait for SQLite's
lock does. Any other program writing to the file still meets SQLite's lock and busy handler alone.
"""

import fcntl
import os
import sqlite3
import time
import weakref

from django.db.backends.sqlite3 import base

TURN_SUFFIX, GATE_SUFFIX = "-turn", "-gate"  # beside the database file, like its -wal and -shm
LOOK_EVERY_S = (0.0002, 0.002)  # a waiter looks again after the first, doubling up to the second
# Statements that write: outside a transaction each takes a turn of its own. Reads need none (WAL readers never
# wait), and BEGIN, COMMIT and the rest are the transaction's, which holds the turn from BEGIN to its end.
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "CREATE", "DROP", "ALTER", "VACUUM", "REINDEX", "ANALYZE")


class Turns:
    """The turn and the gate of one connection: the two lock files of its database file, opened for it."""

    def __init__(self, database, timeout):
        self.timeout, self.held = timeout, False
        mode = os.stat(database).st_mode & 0o666 if os.path.exists(database) else 0o644  # as SQLite's -wal
        self.turn = os.open(f"{database}{TURN_SUFFIX}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        try:
            self.gate = os.open(f"{database}{GATE_SUFFIX}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        except BaseException:
            os.close(self.turn)
            raise
        # A connection dropped without close() (its thread ended) must not keep the files, or a turn, open.
        self.close = weakref.finalize(self, _close, self.turn, self.gate)

    def take(self):
        deadline = time.monotonic() + self.timeout
        self.held = True  # before the turn is ours: an interruption after it still gives it back
        try:  # the gate too: an interruption just after it was taken must not leave it shut
            _lock(self.gate, deadline)
            _lock(self.turn, deadline)
        finally:
            fcntl.flock(self.gate, fcntl.LOCK_UN)

    def give_back(self):
        fcntl.flock(self.turn, fcntl.LOCK_UN)  # harmless when not held: an interrupted take() calls it too
        self.held = False


def _lock(fd, deadline):
    pause = LOOK_EVERY_S[0]
    while True:
        try:
            return fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise sqlite3.OperationalError("database is locked (no turn at writing it within the busy "
                                               "timeout)") from None
            time.sleep(pause)
            pause = min(pause * 2, LOOK_EVERY_S[1])


def _close(*fds):
    for fd in fds:
        os.close(fd)  # closing the file gives up any lock on it


class TurnCursor(base.SQLiteCursorWrapper):
    """Takes a turn for a write outside a transaction (inside one, the transaction holds it)."""

    def __init__(self, connection, turns):
        super().__init__(connection)
        self.turns = turns

    def execute(self, query, params=None):
        if not self._needs_turn(query):
            return super().execute(query, params)
        with self._turn():
            return super().execute(query, params)

    def executemany(self, query, param_list):
        if not self._needs_turn(query):
            return super().executemany(query, param_list)
        with self._turn():
            return super().executemany(query, param_list)

    def _needs_turn(self, query):
        # `held`: this connection has its turn already, though SQLite may have ended the transaction on its own
        # (an automatic rollback): taking it again would wait at the gate behind a writer waiting for us.
        return (not self.turns.held and not self.connection.in_transaction
                and query.lstrip()[:7].upper().startswith(WRITES))

    def _turn(self):
        return _Held(self.turns, self.connection)


class _Held:
    """The turn of one write statement outside a transaction. The statement may have begun one (the sqlite3
    module begins a transaction of its own before a write when autocommit is off): then the turn stays until
    that transaction's commit or rollback, which give it back. A RETURNING statement keeps SQLite's lock
    until its rows are read, just after the turn is given back: the next writer waits for those few
    microseconds in SQLite's busy handler."""

    def __init__(self, turns, connection):
        self.turns, self.connection = turns, connection

    def __enter__(self):
        try:
            self.turns.take()
        except BaseException:
            self.turns.give_back()
            raise

    def __exit__(self, *exc):
        if not self.connection.in_transaction:
            self.turns.give_back()


class DatabaseWrapper(base.DatabaseWrapper):
    turns = None  # None: a database in memory, which one process alone can open

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if not self.is_in_memory_db():
            try:
                self.turns = Turns(self.settings_dict["NAME"], conn_params.get("timeout", 5.0))
            except BaseException:
                connection.close()
                raise
        return connection

    def create_cursor(self, name=None):
        if self.turns is None:
            return super().create_cursor(name)
        turns = self.turns
        return self.connection.cursor(factory=lambda connection: TurnCursor(connection, turns))

    def _start_transaction_under_autocommit(self):
        if self.turns is None:
            return super()._start_transaction_under_autocommit()
        with self.wrap_database_errors:
            try:
                self.turns.take()
                super()._start_transaction_under_autocommit()
            except BaseException:
                self.turns.give_back()
                raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._give_back()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._give_back()

    def _close(self):
        try:
            return super()._close()
        finally:
            if self.turns is not None:
                self.turns.close()
                self.turns = None

    def _give_back(self):
        if self.turns is not None:
            self.turns.give_back()
