"""Helpers the benchmarks share: child processes, readiness, memory, cleanup."""

import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cloud_app import store
from cloud_app.engine import connect
from tooling.signals import start_child

ROOT = Path(__file__).resolve().parent.parent.parent
LOWER_IS_BETTER = {"ms", "s"}  # units of times; every other unit is a rate
# The machine's speed, beside every report: the same loop timed on every run, so that figures taken on
# different days can be read together (this machine is shared: from one day to another its absolute figures
# can move by more than a change does). Long enough to time, short enough to run before every report.
SPEED_STEPS = 1_000_000
SPEED_TRIES = 3  # the best of them: the machine's speed, not its busiest moment


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    target: str = ""
    extra: dict = field(default_factory=dict)
    profile: str = ""  # pyinstrument's text, taken in the same run

    @property
    def ratio(self):
        """How many times better than the baseline: a rate over the baseline's, a baseline's time over this."""
        if not self.baseline or not self.value:
            return None
        return self.baseline / self.value if self.unit in LOWER_IS_BETTER else self.value / self.baseline

    def line(self):
        text = f"{self.name}: {self.value:,.1f} {self.unit}"
        if self.baseline:
            text += f"  | baseline {self.baseline:,.1f} {self.unit}  | x{self.ratio:,.1f}"
        if self.target:
            text += f"  | target {self.target}"
        for key, value in self.extra.items():
            text += f"  | {key} {value}"
        return text

    def details(self):
        """The extra figures as one Markdown cell: 'key value, key value'."""
        def cell(value):
            if isinstance(value, bool):
                return "yes" if value else "no"
            return f"{value:,}" if isinstance(value, (int, float)) else value

        return ", ".join(f"{k} {cell(v)}" for k, v in self.extra.items())

    def as_dict(self):
        return {"name": self.name, "value": self.value, "unit": self.unit, "baseline": self.baseline,
                "ratio": self.ratio, "target": self.target, **self.extra, "profile": self.profile}


@functools.cache
def python_speed():
    """Millions of steps a second of a fixed pure-Python loop on one core, the best of SPEED_TRIES: taken
    once a process, the first time a report asks (a long run should call it as it begins)."""
    best = float("inf")
    for _ in range(SPEED_TRIES):
        began, total = time.perf_counter(), 0
        for step in range(SPEED_STEPS):
            total += step
        best = min(best, time.perf_counter() - began)
    return SPEED_STEPS / best / 1e6


def machine():
    """'2 cores, 23 GiB, Python 3.11.7 at N M loop steps/s': the machine a figure was measured on, and how fast
    it ran Python that day (python_speed)."""
    import platform

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()} at "
            f"{python_speed():.1f} M loop steps/s")


def ran(command, where):
    """The line a generated section opens with: which command wrote it, when, and on what ('where': the
    services and processes it ran against)."""
    from datetime import date

    return f"`{command}` on {date.today().isoformat()} ({machine()}; {where}):"


def reproduce(command):
    """The lines of a report that show the command which wrote it."""
    return ["Reproduce:", "", "```sh", command, "```", ""]


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def manage(*args, env=None, **popen):
    """Start `manage.py ARGS` as a child process, which the run's exit ends if nothing else did
    (tooling.signals.start_child)."""
    return start_child([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT,
                       env={**os.environ, **(env or {})}, **popen)


def stop(proc, timeout=10):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def remove_sqlite(path):
    """A SQLite database file with what SQLite keeps beside it (write-ahead log, shared memory, rollback journal)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def peak_rss_mib(pid):
    """High-water mark of a process's resident memory (VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def delete_prefix(url, prefix):
    client = connect(url)
    try:
        store.delete_prefix(client, prefix)
    finally:
        client.close()


def write_generated(path, text, begin, end):
    """Put `text` (which starts with `begin` and ends with `end`) between those markers in `path`, or at its
    end if it has none yet: a benchmark's own generated section, kept apart from the rest of the file."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        new = old[:old.index(begin)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text + "\n"
    path.write_text(new)


def carry_generated(old_text, new_text, begin, end):
    """`new_text` with the section between `begin` and `end` of `old_text` appended, if it had one (a
    rewrite of the whole file keeps the sections slow runs wrote)."""
    if begin not in old_text or end not in old_text:
        return new_text
    section = old_text[old_text.index(begin):old_text.index(end) + len(end)]
    return new_text.rstrip("\n") + "\n\n" + section + "\n"
