"""Whether the window book runs compiled, and compiled from the source beside it.

`make build` (`python -m edge_app.compiled`, which the Dockerfile runs too) compiles edge_app/windows.py with the C
types of windows.pxd (Cython) into an extension module beside it, and writes STAMP: digests of the two files it was
compiled from and of the extension it made, and the Cython that made it. Python imports an extension module before
the source of the same name, so a windows.py changed since (an edit, a checkout), an extension put there by other
means or one an upgraded Cython has not made again would run instead of the book in windows.py: `state()` says so,
the system check fog.E030 stops the nodes on it, and the test suite refuses to start. Without an extension (no C
compiler, a copy of the tree without `make build`) the plain Python book runs, the same windows at more CPU a
reading (`bench windows` measures the two); fog.W030 says so.
"""

import hashlib
import importlib.machinery
import importlib.util
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ("windows.py", "windows.pxd")
STAMP = HERE / ".windows-built"
BUILT = HERE / f"windows{sysconfig.get_config_var('EXT_SUFFIX')}"  # what `make build` makes
COMPILED, PURE, STALE = "compiled", "pure", "stale"


def extension():
    """The extension module `import edge_app.windows` would load (any suffix Python takes, in its order), or
    None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = HERE / f"windows{suffix}"
        if path.exists():
            return path
    return None


def source_module():
    """edge_app/windows.py run as Python, under a name of its own: the import system gives the extension where
    one is built (the differential test and `bench windows` set the two side by side)."""
    spec = importlib.util.spec_from_file_location("edge_app_windows_source", HERE / "windows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(*paths):
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cython():
    try:
        return metadata.version("cython")
    except metadata.PackageNotFoundError:  # a deployment that ships the extension without the compiler's package
        return None


def _stamp_for(built):
    return {"sources": _digest(*(HERE / name for name in SOURCES)), "extension": _digest(built),
            "cython": _cython() or "?"}


def write_stamp():
    """After a build: what was just compiled, from what, by which Cython."""
    built = extension()
    if built is None:
        raise FileNotFoundError(f"no compiled window book in {HERE}")
    STAMP.write_text("".join(f"{name} {value}\n" for name, value in _stamp_for(built).items()))


def build():
    """Compile the book and stamp it, unless what is there is compiled from the sources beside it. Forced: cythonize
    rebuilds by file times alone, and a source copied in with an older time (rsync -a, tar, Docker's COPY) would
    be stamped without being compiled again."""
    if state()[0] == COMPILED:
        return False
    subprocess.run([sys.executable, "-m", "Cython.Build.Cythonize", "-f", "-i", "-3", "-q", str(HERE / "windows.py")],
                   check=True)
    write_stamp()
    return True


def _read_stamp():
    try:
        return dict(line.split(" ", 1) for line in STAMP.read_text().splitlines() if " " in line)
    except OSError:
        return {}


def state():
    """(COMPILED | PURE | STALE, what to say): which window book `import edge_app.windows` gives."""
    built = extension()
    if built is None:
        return PURE, (f"the window book runs as plain Python: {BUILT.name} is not built (`make build` compiles it "
                      "with Cython and a C compiler)")
    stamp, now = _read_stamp(), _stamp_for(built)
    if stamp.get("sources") != now["sources"] or stamp.get("extension") != now["extension"]:
        return STALE, (f"{built.name} was not compiled from the edge_app/windows.py and windows.pxd beside it "
                       "(changed since, or built by other means), and Python imports it instead of them: run "
                       "`make build`")
    if _cython() is not None and stamp.get("cython") != now["cython"]:
        return STALE, (f"{built.name} was compiled by Cython {stamp.get('cython', '?')}, and Cython {now['cython']} "
                       "is installed: run `make build`")
    return COMPILED, f"the window book runs compiled ({built.name})"


if __name__ == "__main__":
    try:
        if build():
            print(f"build: compiled edge_app/windows.py ({extension().name})")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        sys.exit(f"build: the window book was not compiled: {exc}")
