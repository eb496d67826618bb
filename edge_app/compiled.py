"""Whether the window book runs compiled, and compiled from the source beside it.

`make build` compiles edge_app/windows.py with the C types of windows.pxd (Cython) into an extension module
beside it, and writes STAMP: a digest of the two files it was compiled from. Python imports an extension module
before the source of the same name, so a windows.py changed since (an edit, a checkout) would not run at all, the
old compiled book would: `state()` says so, the system check fog.E030 stops the nodes on it, and the test suite
refuses to start. Without the extension (no C compiler, a copy of the tree without `make build`) the plain
Python book runs, the same windows at more CPU a reading (`bench windows` measures the two); fog.W030 says so.
"""

import hashlib
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ("windows.py", "windows.pxd")
STAMP = HERE / ".windows-built"
EXTENSION = HERE / f"windows{sysconfig.get_config_var('EXT_SUFFIX')}"
COMPILED, PURE, STALE = "compiled", "pure", "stale"


def source_digest():
    """One SHA-256 over the files the extension is compiled from, in their order."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    return digest.hexdigest()


def write_stamp():
    """After a build: the digest of what was just compiled."""
    STAMP.write_text(source_digest() + "\n")


def state():
    """(COMPILED | PURE | STALE, what to say): which window book `import edge_app.windows` gives."""
    if not EXTENSION.exists():
        return PURE, (f"the window book runs as plain Python: {EXTENSION.name} is not built (`make build` compiles "
                      "it with Cython and a C compiler)")
    try:
        built = STAMP.read_text().strip()
    except OSError:
        built = ""
    if built != source_digest():
        return STALE, (f"{EXTENSION.name} was not compiled from the edge_app/windows.py and windows.pxd beside it "
                       "(changed since, or built by hand), and Python imports it instead of them: run `make build`")
    return COMPILED, f"the window book runs compiled ({EXTENSION.name})"
