"""Warnings about bad input from outside (Kafka, the network), at a rate no sender of it controls.

Bad input is logged so an operator sees what and where; but one line per
bad message lets whoever sends them fill the disk and bury the rest of the
log. Both apps take their lines through this.
"""

import time


class RateLimitedLog:
    """At most `lines` log lines per `seconds`; then one line saying how many were left out, written by the
    next warning after the period, or by `flush` (call it now and then, so a flood that stops is told too)."""

    def __init__(self, logger, lines, seconds, clock=time.monotonic):
        self.logger, self.lines, self.seconds, self.clock = logger, lines, seconds, clock
        self.started, self.written, self.suppressed = -seconds, 0, 0

    def warning(self, message, *args):
        self._write(self.logger.warning, message, args)

    def exception(self, message, *args):
        """An error with its traceback (from an except block), in the same count as the warnings."""
        self._write(self.logger.exception, message, args)

    def _write(self, method, message, args):
        self._roll(self.clock())
        if self.written < self.lines:
            self.written += 1
            method(message, *args)
        else:
            self.suppressed += 1

    def flush(self):
        self._roll(self.clock())

    def _roll(self, now):
        if now - self.started >= self.seconds:
            if self.suppressed:
                self.logger.warning("... and %d more like it within %.0f s", self.suppressed, self.seconds)
            self.started, self.written, self.suppressed = now, 0, 0
