"""Each step's readings sent at their own moments within the step, not all at once (`runsimulation --spread on`).

By default every synthetic household of a step reads at the step's start and
the adapter sends the step in one burst, which the edge reads for as long as
it takes, its clock counting only as far as it has read. Real meters are not
synchronised: spread (paced runs), each synthetic household reads at a moment
of its own within the step, one of `slices(step_ms)` moments SLICE_MS apart
(HouseholdSim), and the adapter hands the step to a SpreadSender, which sends
each slice of it at the moment its readings carry; readings from files keep
their own times and go out at them the same way. The edge then reads a steady
stream, in more, smaller messages and polls: `bench e2e --baseline
spread-readings` measures what that does to freshness and to every process's
CPU, beside the same run with bursts.

The adapter decides whether a step goes out (RunStats.release) and counts it;
once handed over, the whole step goes out, each slice at its moment, or at
once when the run ends. Only the sender's thread touches the producer while
the run lasts, so delivery reports run on it alone.
"""

import logging
import threading
import time
from collections import deque

log = logging.getLogger("fog.simulation")

SLICE_MS = 100  # the grid of a step's moments: at 2 s steps 20 slices, each a twentieth of the households
WAIT_SLICE_S = 0.25  # the sender looks at its queue at least this often


def slices(step_ms):
    """How many moments a step of `step_ms` has (at least one)."""
    return max(step_ms // SLICE_MS, 1)


def slot_of(ts_ms, step_start_ms, step_ms):
    """Which of a step's moments a reading at `ts_ms` goes out at: the last one not after it."""
    return min(max((ts_ms - step_start_ms) // SLICE_MS, 0), slices(step_ms) - 1)


class SpreadSender:
    """A thread that sends handed-over slices at their moments (monotonic seconds), in order.

    A slice is a list of (send, args): the producer's calls; `poll()` is the producer's too. Once `stop_flag()`
    names a signal, what is handed over goes out at once, not at its moment. `close(hurry)` waits until
    everything handed over is sent (`hurry`: at once) and ends the thread; an exception the thread met is
    raised there, and `error` holds it as soon as it happens (the adapter then stops the run)."""

    def __init__(self, poll, stop_flag=lambda: None):
        self._poll, self._stop_flag = poll, stop_flag
        self._pending = deque()  # (due, [(send, args), ...]) in order of due
        self._cond = threading.Condition()
        self._hurry = self._closing = False
        self.max_late = 0.0  # seconds the latest slice went out after its moment
        self.error = None
        self._thread = threading.Thread(target=self._run, name="fog-spread-sender", daemon=True)
        self._thread.start()

    def hand(self, slices_due):
        """[(due, messages), ...], in order of due, after everything handed before."""
        with self._cond:
            self._pending.extend(slices_due)
            self._cond.notify()

    def _next(self):
        with self._cond:
            while True:
                now = time.monotonic()
                if self._pending and (self._hurry or self._pending[0][0] <= now or self._stop_flag()):
                    return self._pending.popleft()
                if self._closing and not self._pending:
                    return None
                wait = self._pending[0][0] - now if self._pending else WAIT_SLICE_S
                self._cond.wait(min(wait, WAIT_SLICE_S))

    def _run(self):
        try:
            while (item := self._next()) is not None:
                due, messages = item
                self.max_late = max(self.max_late, time.monotonic() - due)
                for send, args in messages:
                    send(*args)
                self._poll()
        except Exception as exc:  # noqa: BLE001 -- kept for close() to raise in the run's own thread
            log.exception("the simulation's sender stopped")
            self.error = exc

    def close(self, hurry=False):
        with self._cond:
            self._closing = True
            self._hurry = self._hurry or hurry
            self._cond.notify()
        self._thread.join()
        if self.error is not None:
            raise self.error
