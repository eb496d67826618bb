"""Which processes run, read from Linux's /proc: for the supervisor, and for the fault harness and the suite's hygiene."""

import os
import time

# A process in the middle of exec() has its new memory but not yet its environment, which /proc reads as empty,
# and subprocess.Popen returns in that gap (its error pipe closes as exec passes the point of no return): a
# process just started looked like one without the marker. One with an executable is read again, this often.
EXEC_SETTLE_TRIES, EXEC_SETTLE_S = 50, 0.002


def _stat(pid):
    """The fields of /proc/PID/stat after the command name (state first, then the parent pid)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()


def alive(pid):
    """True if `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return _stat(pid)[0] != b"Z"
    except OSError:
        return False


def start_ticks(pid):
    """When `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat), or -1 if it can't be read."""
    try:
        return int(_stat(pid)[19])
    except (OSError, ValueError, IndexError):
        return -1


def _pids():
    return (int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit())


def child_pids(pid):
    """The pids whose parent is `pid`."""
    children = []
    for child in _pids():
        try:
            if int(_stat(child)[1]) == pid:
                children.append(child)
        except (OSError, ValueError, IndexError):
            continue
    return children


def has_environment(pid, name, value, prefix=False):
    """Whether `pid` was started with NAME=VALUE in its environment (with prefix=True, a value starting with
    VALUE); False for a process gone or not ours to read."""
    marker = f"{name}={value}".encode()
    try:
        for _ in range(EXEC_SETTLE_TRIES):
            with open(f"/proc/{pid}/environ", "rb") as env:
                environ = env.read()
            if environ or not os.path.exists(f"/proc/{pid}/exe"):  # no executable: a kernel thread, or gone
                break
            time.sleep(EXEC_SETTLE_S)
    except OSError:
        return False
    return any(entry == marker or (prefix and entry.startswith(marker)) for entry in environ.split(b"\0"))


def with_environment(name, value, prefix=False):
    """{pid: command line} of the live processes (but this one) started with NAME=VALUE in their environment,
    which every child inherits: how a test session finds what it started among other sessions' processes.
    With prefix=True a value that merely starts with VALUE matches too (a parallel session's workers)."""
    found = {}
    for pid in _pids():
        if pid == os.getpid() or not has_environment(pid, name, value, prefix) or not alive(pid):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                found[pid] = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended while we looked, or is not ours to read
            continue
    return found
