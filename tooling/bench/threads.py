"""Which threads of the pipeline's processes do the work, and whether they ever rest: bench e2e's pointer to its
bottleneck.

A process's CPU says how much work it did, not whether it kept up. A loop that never waits for its input (its
next poll always finds data) is the one that holds the pipeline back, even when it got less than a core because
the other processes took the rest. So every THREAD_SAMPLE_S each thread's state is looked at
(/proc/PID/task/TID/stat): the share of the looks that found it running or ready to run (R) is how busy it was,
and a thread busy close to 100% waited for nothing but a core. (/proc/.../schedstat would split the time on a
core from the time waiting for one, but not every kernel has it; this one needs only /proc/PID/task.)
"""

import os
import threading
import time
from dataclasses import dataclass

THREAD_SAMPLE_S = 0.2  # how often every thread's state is looked at
MIN_SPAN_S = 1.0  # a span sampled shorter than this gives no rate
BUSIEST_THREADS = 3  # named in the figures; the JSON result has every thread


def listdir(path):
    """The names in a /proc folder, or none once its process is gone."""
    try:
        return os.listdir(path)
    except OSError:
        return []


def proc_stat(path):
    """(name, the fields after it) of a /proc .../stat file: fields[0] is the state letter, fields[11:15] the user,
    system and waited-for children's user and system jiffies. OSError once its process is gone."""
    with open(path) as handle:
        raw = handle.read()
    close = raw.rindex(")")  # the name may hold spaces and parentheses
    return raw[raw.index("(") + 1:close], raw[close + 1:].split()


def thread_stat(pid, tid):
    """(name, state letter, user + system jiffies) of one thread. OSError once it is gone."""
    name, fields = proc_stat(f"/proc/{pid}/task/{tid}/stat")
    return name, fields[0], int(fields[11]) + int(fields[12])


@dataclass(slots=True)
class _Seen:
    root: str
    name: str
    base: int  # jiffies at the first look, 0 for a thread born since (it counts from its start)
    since: float  # the first look that saw it
    jiffies: int
    until: float  # the last look that saw it
    looks: int = 0
    busy: int = 0  # looks that found it running or ready to run


class ThreadLoad:
    """Every thread of named process trees, sampled in a thread of its own: cores each used, and the share of
    the time it was running or ready to run. `tree(pid)` lists a root's processes as they are at each look (the
    edge's workers come and go); `labels` names processes, {pid: "ingest loop"}, whose main thread is then called
    "<root> <label>" (other threads "<root> <label>, thread <name>")."""

    def __init__(self, roots, tree, labels=None):
        self.roots, self.tree, self.labels = roots, tree, dict(labels or {})
        self.seen = {}  # (pid, tid) -> _Seen
        self.first_look = self.last_look = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-thread-load", daemon=True)
        self.hz = os.sysconf("SC_CLK_TCK")

    def sample(self):
        now = time.monotonic()
        born_since = self.first_look is not None  # a thread first seen now began after the first look: from 0
        if not born_since:
            self.first_look = now
        self.last_look = now
        for root, root_pid in self.roots.items():
            for pid in self.tree(root_pid):
                for task in listdir(f"/proc/{pid}/task"):
                    try:
                        name, state, jiffies = thread_stat(pid, task)
                    except (OSError, ValueError, IndexError):  # gone between the listing and the read
                        continue
                    seen = self.seen.get((pid, int(task)))
                    if seen is None:
                        seen = self.seen[pid, int(task)] = _Seen(root, name, 0 if born_since else jiffies, now,
                                                                 jiffies, now)
                    seen.jiffies, seen.until = jiffies, now
                    seen.looks += 1
                    seen.busy += state == "R"

    def _run(self):
        self.sample()
        while not self.done.wait(THREAD_SAMPLE_S):
            self.sample()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.done.set()
        if self.thread.ident is not None:  # started
            self.thread.join(2)

    def _name(self, root, root_pid, pid, tid, name):
        label = self.labels.get(pid)
        if label is None:
            label = "" if pid == root_pid else name
        base = f"{root} {label}".strip()
        return base if tid == pid else f"{base}, thread {name}"

    def result(self):
        """[{"thread", "cpu", "busy", "seconds"}], the most CPU first: the cores it used over the whole span
        sampled (a process that ran for a moment of it, as Redis's rewrite of its append-only file, counts for
        that moment), the share of its looks that found it running or ready to run, and for how long it was seen
        (a thread that came or went during the span, less than the span). [] for a span under MIN_SPAN_S."""
        self.stop()
        span = (self.last_look - self.first_look) if self.first_look is not None else 0.0
        if span < MIN_SPAN_S:
            return []
        threads = []
        for (pid, tid), seen in self.seen.items():
            threads.append({"thread": self._name(seen.root, self.roots[seen.root], pid, tid, seen.name),
                            "cpu": round((seen.jiffies - seen.base) / self.hz / span, 2),
                            "busy": round(seen.busy / seen.looks, 2), "seconds": round(seen.until - seen.since, 1)})
        return sorted(threads, key=lambda t: (-t["cpu"], -t["busy"], t["thread"]))


def describe(threads, names=None):
    """"<thread> <cores>, busy <share>" of the busiest threads (or of those `names` gives, in its order)."""
    span = max((t["seconds"] for t in threads), default=0.0)  # what a thread seen at every look was seen for
    if names is not None:
        found = {t["thread"]: t for t in threads}
        threads = [found[name] for name in names if name in found]
    else:
        threads = threads[:BUSIEST_THREADS]
    return ", ".join(f"{t['thread']} {t['cpu']:.2f}, busy {t['busy']:.0%}"
                     + (f" (seen {t['seconds']:g} s)" if t["seconds"] < span - THREAD_SAMPLE_S else "")
                     for t in threads) or "-"
