"""The signals a long-running command (runedge, runcloud, runsimulation) stops on, as on Ctrl-C.

SIGINT and SIGTERM, and SIGHUP: a terminal that closes under a command sends it, and its default action kills
the process mid-write (readings queued for Kafka never flushed, an edge's workers left to the parent-death
signal). A process started ignoring SIGHUP (`nohup`) keeps ignoring it, as its user asked.
"""

import signal


def stop_signals():
    """The signals to take as a stop request here: each handler only sets the command's flag."""
    return [signal.SIGINT, signal.SIGTERM] + (
        [signal.SIGHUP] if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN else [])
