"""Django's SQLite backend, with writers that take turns.

SQLite lets one writer in at a time. One that finds the lock taken waits in SQLite's busy handler, which
sleeps in steps that grow to 100 ms and looks again only when it wakes. A writer that commits transaction
after transaction frees the lock for a moment between them, too short for a sleeper to see: the edge's
ingest storing a window end's burst in parts held the sender off for the whole burst, and the sender's
claims and acknowledgements held the ingest off in turn. The parts were meant to let the sender start on
the first while the rest was written.

So every transaction here first takes a turn, a lock in the kernel (flock) that wakes a waiter the moment
it is freed. A waiter holds a second lock, the gate, while it waits, and a writer takes the gate before
the turn: one that has just committed cannot take its turn straight back past a waiter. Every process and
thread that opens the same database file waits in the same line (each connection opens the two files
itself, and flock locks belong to an open file). Statements outside a transaction, and any other program
writing to the file, still meet SQLite's own lock and busy handler, as before.
"""

import fcntl
import os

from django.db.backends.sqlite3 import base

TURN_SUFFIX, GATE_SUFFIX = "-turn", "-gate"  # beside the database file, like its -wal and -shm


class Turns:
    """The turn and the gate of one connection: the two lock files of its database file, opened for it."""

    def __init__(self, database):
        self.turn = os.open(f"{database}{TURN_SUFFIX}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.gate = os.open(f"{database}{GATE_SUFFIX}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.held = False

    def take(self):
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.turn, fcntl.LOCK_EX)
        finally:
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        self.held = True

    def give_back(self):
        if self.held:
            self.held = False
            fcntl.flock(self.turn, fcntl.LOCK_UN)

    def close(self):
        self.give_back()
        os.close(self.turn)
        os.close(self.gate)


class DatabaseWrapper(base.DatabaseWrapper):
    turns = None  # None: a database in memory, which one process alone can open

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if not self.is_in_memory_db():
            self.turns = Turns(self.settings_dict["NAME"])
        return connection

    def _start_transaction_under_autocommit(self):
        if self.turns is None:
            return super()._start_transaction_under_autocommit()
        self.turns.take()
        try:
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
