"""How a harness run (bench, chaos) ends on a signal: like Ctrl-C, once.

Ctrl-C, SIGTERM (a CI job cancelled, `timeout`) and SIGHUP (the terminal
closed) all raise KeyboardInterrupt in the main thread, so every `finally`
of the run stops the processes it started and deletes its topics, keys and
folders. A harness is a sequence of blocking steps, not a loop with a
`handle_one_...()` body that could look at a flag between steps: the
exception is how it gets out of whichever step it is in.

Only the first signal does: from then on these signals are ignored, so a
second Ctrl-C cannot cut the cleanup short and leave a pipeline running
(SIGKILL still ends the harness, and then its children end by their own
limits). Processes started after that would inherit the ignoring, so a
cleanup starts none. A signal the harness was started ignoring (nohup's
SIGHUP) stays ignored.
"""

import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_on_signals(out):
    """Install the handler; `out` is told once, when a run starts to stop."""

    def first(signum, frame):
        for each in SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        out(f"{signal.Signals(signum).name}: stopping; cleaning up what this run started "
            "(further signals are ignored until it is done)")
        raise KeyboardInterrupt

    for each in SIGNALS:
        if signal.getsignal(each) is not signal.SIG_IGN:  # `nohup` (SIGHUP), `cmd &` in a script (SIGINT)
            signal.signal(each, first)
