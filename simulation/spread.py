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
once handed over, the whole step goes out, each slice at its moment; at once,
before its moments, when a stop comes. A run that ends waits for its last
step's moments. Only the sender's thread touches the producer while the run
lasts, so delivery reports run on it alone. A run whose sender fails (a send
raised something the producer does not count as a refusal) fails with it.
"""

import logging
import threading
import time
from collections import deque

log = logging.getLogger("fog.simulation")

SLICE_MS = 100  # the grid of a step's moments: at 2 s steps 20 slices, each a twentieth of the households
WAIT_SLICE_S = 0.25  # the sender looks at its queue, and a hand-over waiting for room at its stop, this often
# Steps handed over and not yet all taken: the next hand-over waits while this many are, so a sender held up
# (Kafka away: the producer's queue is full and its send waits) holds up the run, as a send in mosaik's own
# step did, instead of steps piling up in memory. At real time at most one is pending.
MAX_PENDING_STEPS = 2
# After the run failed, the sender has this long to send what it holds before the run ends without it (it may
# be waiting for a Kafka that is away; the thread is a daemon and ends with the process).
FAILED_CLOSE_S = 10


def slices(step_ms):
    """How many moments a step of `step_ms` has (at least one)."""
    return max(step_ms // SLICE_MS, 1)


class SpreadSender:
    """A thread that sends handed-over steps, each slice at its moment (monotonic seconds), in order.

    A step is [(due, [(send, args), ...]), ...]: its slices, each the producer's calls; `poll()` is the
    producer's too. Once `stop_flag()` names a signal, what is handed over goes out at once, before its moments.
    `close(hurry)` waits until everything handed over is sent (`hurry`, after a failure: at once, and for at
    most FAILED_CLOSE_S) and ends the thread. An exception a send raises ends the thread, and what it still
    held with it: `error` holds it, the next hand-over raises it, and so does `close()` (the run fails)."""

    def __init__(self, poll, stop_flag=lambda: None):
        self._poll, self._stop_flag = poll, stop_flag
        self._pending = deque()  # steps, each a deque of (due, [(send, args), ...]) in order of due
        self._cond = threading.Condition()
        self._hurry = self._closing = self._abandoned = False
        self.max_late = 0.0  # the most seconds a slice went out after its moment
        self.error = None
        self._thread = threading.Thread(target=self._run, name="fog-spread-sender", daemon=True)
        self._thread.start()

    def hand(self, step):
        """Queue a step's slices, in order of due, after everything handed before; first wait while
        MAX_PENDING_STEPS are queued (not while a stop is asked for)."""
        with self._cond:
            while (len(self._pending) >= MAX_PENDING_STEPS and self.error is None and self._thread.is_alive()
                   and not self._stop_flag()):
                self._cond.wait(WAIT_SLICE_S)
            if self.error is not None or not self._thread.is_alive():
                raise RuntimeError("the simulation's sender stopped") from self.error
            if step:
                self._pending.append(deque(step))
                self._cond.notify_all()

    def _next(self):
        with self._cond:
            while True:
                now = time.monotonic()
                if self._pending:
                    step = self._pending[0]
                    if self._hurry or step[0][0] <= now or self._stop_flag():
                        item = step.popleft()
                        if not step:
                            self._pending.popleft()
                            self._cond.notify_all()  # room for a hand-over that waits
                        return item
                    wait = step[0][0] - now
                elif self._closing:
                    return None
                else:
                    wait = WAIT_SLICE_S
                self._cond.wait(min(wait, WAIT_SLICE_S))

    def _run(self):
        try:
            while (item := self._next()) is not None:
                due, messages = item
                self.max_late = max(self.max_late, time.monotonic() - due)
                for send, args in messages:
                    if self._abandoned:  # a failed run's close gave up on it: the producer is closing
                        return
                    send(*args)
                self._poll()
        except BaseException as exc:  # noqa: BLE001 -- whatever ends the thread is raised again in the run's (hand, close)
            log.exception("the simulation's sender stopped")
            with self._cond:
                self.error = exc
                self._cond.notify_all()

    def close(self, hurry=False):
        with self._cond:
            self._closing = True
            self._hurry = self._hurry or hurry
            self._cond.notify_all()
        self._thread.join(FAILED_CLOSE_S if hurry else None)
        if self._thread.is_alive():
            self._abandoned = True
            log.warning("the simulation's sender did not finish within %s s of the run's failure: what it still "
                        "held is not sent", FAILED_CLOSE_S)
        if self.error is not None:
            raise self.error
