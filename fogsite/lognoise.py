"""Third-party log noise, folded into one line a minute per library and level.

kafka-python warns `Task ... ran for 0.472s (>0.100s threshold). It is
blocking the event loop` every few seconds when ingest is saturated; a new
user reads each such line as a fault. The console handler lets the first
record of each third-party library and level through in full, holds back
the rest for THIRD_PARTY_INTERVAL_S, and tells with the next one it lets
through how many it held back. The project's own loggers (`fog.*`) are
never held back.
"""

import logging
import time

THIRD_PARTY_INTERVAL_S = 60.0
OWN_LOGGER = "fog"


class ThirdPartySummary(logging.Filter):
    def __init__(self, interval=THIRD_PARTY_INTERVAL_S, own=OWN_LOGGER, clock=time.monotonic):
        super().__init__()
        self.interval, self.own, self.clock = interval, own, clock
        self.budget = {}  # (library, level) -> [start of its interval, records held back in it]

    def filter(self, record):
        if record.name == self.own or record.name.startswith(self.own + "."):
            return True
        key = (record.name.partition(".")[0], record.levelno)
        now = self.clock()
        state = self.budget.get(key)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return False
        held_back = state[1] if state else 0
        self.budget[key] = [now, 0]
        if held_back:
            # Formatted here so the count stays beside the one record that is shown.
            record.msg, record.args = (f"{record.getMessage()} [and {held_back} more {record.levelname} lines "
                                       f"from {key[0]} in the last {self.interval:.0f} s, not shown]"), ()
        return True
