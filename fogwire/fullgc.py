"""Full garbage collections where a long-running loop can afford them, not in the middle of a burst.

The ingest keeps an open window per household and the simulation an entity per household: hundreds of
thousands of long-lived objects. At real time both also make and drop as many short-lived ones every
few seconds, so CPython's own rule runs a full collection (generation 2) every second or two. Each one
walks the whole heap, finds next to nothing (the windows and readings are freed by reference counting),
and stops the loop in the middle of the very burst whose latency counts.

`FullCollections` leaves the young generations to CPython and takes the full collections over: the loop
calls `handle_one_pause()` where it has nothing to do (the ingest on a poll that read nothing, with no
window due soon; the simulation waiting for its next step), and a full collection runs there once
FOG_FULL_GC_SECONDS have passed since the last. A loop that never pauses still collects, wherever it
is, after OVERDUE_FACTOR times that, so reference cycles never pile up. What was alive when the loop
started (modules, settings, the ORM's caches) is frozen out of every full collection (`gc.freeze`).
FOG_FULL_GC_SECONDS=0 leaves everything to CPython, as before (`bench e2e --baseline gc` compares the two).
"""

import gc
import logging
import time

log = logging.getLogger("fog.gc")

NEVER = 2**31 - 1  # a generation-2 threshold CPython's own rule never reaches
OVERDUE_FACTOR = 3  # a loop that never pauses collects after this many intervals, wherever it is
ROOM_FACTOR = 2  # a pause must leave this many times the last collection's length before anything is due
MIN_ROOM_S = 0.5  # and at least this (the first collection's length is not known yet)
SLOW_COLLECTION_S = 0.05  # collections longer than this are logged at DEBUG, with their length


class FullCollections:
    def __init__(self, every_s, clock=time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.active = False
        self.last = clock()
        self.took = 0.0  # seconds the last full collection took
        self.collections = 0
        self._thresholds = None

    def start(self):
        """Take the full collections over (nothing, if every_s is 0). Returns self."""
        if self.every_s > 0 and not self.active:
            gc.collect()
            gc.freeze()  # what lives now lives for the whole loop: no full collection need walk it again
            self._thresholds = gc.get_threshold()
            young, middle, _ = self._thresholds
            gc.set_threshold(young, middle, NEVER)
            self.active, self.last = True, self.clock()
        return self

    def stop(self):
        """Give the full collections back to CPython (the loop ends; a test's process goes on)."""
        if self.active:
            gc.set_threshold(*self._thresholds)
            gc.unfreeze()
            self.active = False

    def handle_one_pause(self, room_s=None):
        """The loop has nothing to do for `room_s` seconds (None: not known). Collect if one is due and
        fits in the room. True if it collected."""
        if not self.active:
            return False
        since = self.clock() - self.last
        if since < self.every_s:
            return False
        if (room_s is not None and room_s < max(ROOM_FACTOR * self.took, MIN_ROOM_S)
                and since < OVERDUE_FACTOR * self.every_s):
            return False
        self.collect()
        return True

    def handle_one_step(self):
        """The loop is busy: collect only if a collection is overdue. True if it collected."""
        if self.active and self.clock() - self.last >= OVERDUE_FACTOR * self.every_s:
            self.collect()
            return True
        return False

    def collect(self):
        started = time.perf_counter()
        found = gc.collect()
        self.took = time.perf_counter() - started
        self.last = self.clock()
        self.collections += 1
        if self.took >= SLOW_COLLECTION_S:
            log.debug("full garbage collection: %.0f ms, %d objects freed", self.took * 1000, found)
        return found
