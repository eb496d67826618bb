"""Event-time tumbling windows per household, with no I/O.

A reading at `ts` (epoch ms) belongs to the window starting at
floor(ts / W) * W. A household's window closes when that household's newest
event time reaches the window's end plus the grace period, or when the
household has been silent (wall clock) for the idle timeout. A reading whose
window has closed, or would have, is late: counted, never applied.

Every open window remembers the Kafka offset of its first reading, so the
consumer can resume from the oldest offset still inside an open window.
"""

from dataclasses import dataclass, field


@dataclass(slots=True)
class OpenWindow:
    start: int
    partition: int
    first_offset: int
    total: float = 0.0
    count: int = 0


@dataclass(slots=True)
class ClosedWindow:
    household: str
    start: int
    end: int
    average: float
    count: int


@dataclass(slots=True)
class Household:
    windows: dict = field(default_factory=dict)  # start -> OpenWindow
    newest_ts: int = -1
    closed_until: int = -1  # end of the newest closed window
    last_seen: float = 0.0  # wall clock (monotonic seconds)


class WindowBook:
    def __init__(self, window_ms, grace_ms, idle_seconds):
        if window_ms <= 0:
            raise ValueError("window must be positive")
        self.window_ms, self.grace_ms, self.idle_seconds = window_ms, grace_ms, idle_seconds
        self.households = {}
        self.closed = []

    def add(self, household, ts, power, partition, offset, now):
        """Apply one reading. Returns False (and applies nothing) if it is late."""
        state = self.households.get(household)
        if state is None:
            state = self.households[household] = Household()
        start = ts - ts % self.window_ms
        end = start + self.window_ms
        if end <= state.closed_until or end + self.grace_ms <= state.newest_ts:
            return False
        window = state.windows.get(start)
        if window is None:
            window = state.windows[start] = OpenWindow(start, partition, offset)
        window.total += power
        window.count += 1
        state.last_seen = now
        if ts > state.newest_ts:
            state.newest_ts = ts
            self._close_due(household, state)
        return True

    def _close_due(self, household, state, everything=False):
        due = [s for s in state.windows if everything or s + self.window_ms + self.grace_ms <= state.newest_ts]
        for start in sorted(due):
            window = state.windows.pop(start)
            end = start + self.window_ms
            self.closed.append(ClosedWindow(household, start, end, window.total / window.count, window.count))
            state.closed_until = max(state.closed_until, end)

    def close_idle(self, now):
        """Close every window of households silent for the idle timeout; returns how many closed."""
        before = len(self.closed)
        cutoff = now - self.idle_seconds
        for household, state in self.households.items():
            if state.windows and state.last_seen <= cutoff:
                self._close_due(household, state, everything=True)
        return len(self.closed) - before

    def shift_idle(self, seconds):
        """Forget `seconds` of silence: the ingest paused (for its budget), the households did not."""
        for state in self.households.values():
            state.last_seen += seconds

    def close_all(self):
        for household, state in self.households.items():
            if state.windows:
                self._close_due(household, state, everything=True)

    def take_closed(self):
        closed, self.closed = self.closed, []
        return closed

    def open_windows(self):
        return sum(len(state.windows) for state in self.households.values())

    def resume_offsets(self, next_offsets):
        """Per partition: the oldest offset inside an open window, else the next unread offset."""
        resume = dict(next_offsets)
        for state in self.households.values():
            for window in state.windows.values():
                if window.first_offset < resume.get(window.partition, window.first_offset + 1):
                    resume[window.partition] = window.first_offset
        return resume
