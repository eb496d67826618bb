"""The window book compiled by `make build` (edge_app/windows.pxd, Cython) windows every stream as its plain Python
source does, and a compiled book that is not the source's is refused (edge_app/compiled.py)."""

import random
import shutil

import pytest

import edge_app.windows as imported
from edge_app import compiled
from fogsite.checks import _check_window_book

T0 = 1_577_142_000_000
HOUSEHOLDS = 30


def test_it_runs_the_book_make_build_compiled():
    assert compiled.state()[0] == compiled.COMPILED, compiled.state()[1]
    assert imported.__file__ == str(compiled.BUILT) == str(compiled.extension())


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_it_windows_every_stream_as_its_source_does(seed):
    """Live and replayed readings, copies, late ones, strays far ahead, households moving between partitions (keyed
    input, and unkeyed, where any reading may come from any partition), limits on close_live, a read clock behind
    or not yet started, pauses and clock steps: after every call both books hold and give the same."""
    assert compiled.state()[0] == compiled.COMPILED, compiled.state()[1]
    source = compiled.source_module()
    rng = random.Random(seed)
    stagger, keyed = seed % 2 == 1, seed <= 2
    books = [module.WindowBook(5000, 2000, 4, live_grace_ms=700, stagger=stagger, keyed=keyed)
             for module in (imported, source)]
    now, offsets, last = 0.0, [0, 0, 0], {}
    for step in range(8000):
        now += rng.choice((0.0, 0.01, 0.2, 0.7))
        wall_ms = T0 + int(now * 1000)
        partition = rng.randrange(3) if rng.random() < (0.05 if keyed else 0.7) else step % 2
        readings = []
        for _ in range(rng.randint(1, 4)):
            household = f"h{rng.randrange(HOUSEHOLDS if step % 3000 < 2200 else 4)}"
            kind = rng.random()
            if kind < 0.6:
                ts = wall_ms - rng.randrange(0, 1500)  # live
            elif kind < 0.75:
                ts = T0 - 7_200_000 + step * 311  # a replay, never live
            elif kind < 0.85 and household in last:
                ts = last[household]  # a copy
            elif kind < 0.9:
                ts = wall_ms + rng.choice((3_600_000, 900_000, 40_000))  # a stray (or two agreeing) far ahead
            else:
                ts = wall_ms - rng.randrange(10_000, 700_000)  # behind: late, or a first reading's stray
            last[household] = ts
            readings.append((household, ts, rng.choice((0.0, 1.5, 230.0, 43_470.0))))
        live = rng.random() < 0.85
        outcomes = [[book.add_many(readings, partition, offsets[partition], now, wall_ms if live else None)
                     for book in books]]
        offsets[partition] += 1
        if rng.random() < 0.3:
            read_ms = rng.choice((None, None, -1, wall_ms - rng.randrange(0, 5000)))  # -1: nothing read yet
            limit = rng.choice((None, None, 0, 1, 3))
            outcomes.append([book.close_live(wall_ms, read_ms, limit) for book in books])
        if rng.random() < 0.1:
            outcomes.append([book.close_idle(now) for book in books])
        if rng.random() < 0.002:
            for book in books:
                book.shift_idle(3.0)
        if rng.random() < 0.002:
            stepped = rng.choice((-2000, 60_000))
            for book in books:
                book.shift_clock(stepped)
        if step == 7999:
            for book in books:
                book.close_all()
        assert all(mine == theirs for mine, theirs in outcomes), (step, outcomes)
        _assert_same(*books, offsets, step)


def _assert_same(compiled_book, source_book, offsets, step):
    closed = [[(w.household, w.start, w.end, w.average, w.count) for w in book.take_closed()]
              for book in (compiled_book, source_book)]
    assert closed[0] == closed[1], step
    for look in (lambda b: b.open_windows(), lambda b: b.next_live_due_ms(), lambda b: b.live_entries,
                 lambda b: b.live_due, lambda b: b.households.keys(), lambda b: _households(b),
                 lambda b: b.resume_offsets(dict(enumerate(offsets))), lambda b: b.unordered, lambda b: b.spread,
                 lambda b: dict(b.moved), lambda b: (b.idle_live, b.idle_base, b.forget_base)):
        assert look(compiled_book) == look(source_book), step


def _households(book):
    """Every household's clock and open windows, field by field."""
    return {name: (state.newest_ts, state.closed_until, sorted(state.closed_ahead), state.ahead_ts, state.last_seen,
                   state.newest_at, state.confirmed, state.phase, state.partition,
                   {start: (w.partition, w.first_offset, w.total, w.count, w.touched, w.live_until, w.others,
                            sorted(w.stamps)) for start, w in state.windows.items()})
            for name, state in book.households.items()}


def test_it_refuses_a_compiled_book_that_is_not_its_sources(tmp_path, monkeypatch):
    for name in compiled.SOURCES:
        shutil.copy(compiled.HERE / name, tmp_path / name)
    monkeypatch.setattr(compiled, "HERE", tmp_path)
    monkeypatch.setattr(compiled, "STAMP", tmp_path / ".windows-built")
    monkeypatch.setattr(compiled, "BUILT", tmp_path / compiled.BUILT.name)
    assert compiled.state()[0] == compiled.PURE
    assert [problem.id for problem in _check_window_book()] == ["fog.W030"]
    compiled.BUILT.write_bytes(b"a build")
    assert compiled.state()[0] == compiled.STALE  # an extension nobody stamped: built by other means
    compiled.write_stamp()
    assert compiled.state()[0] == compiled.COMPILED and _check_window_book() == []

    compiled.BUILT.write_bytes(b"another build")  # copied in over it, whatever its time says
    assert compiled.state()[0] == compiled.STALE
    compiled.write_stamp()
    with open(tmp_path / "windows.py", "a") as source:
        source.write("# edited since\n")
    kind, said = compiled.state()
    assert kind == compiled.STALE and "make build" in said
    assert [problem.id for problem in _check_window_book()] == ["fog.E030"]

    compiled.write_stamp()
    compiled.STAMP.write_text(compiled.STAMP.read_text().replace(f"cython {compiled._cython()}", "cython 0.29.0"))
    assert compiled.state()[0] == compiled.STALE  # made by another Cython than the one the lock installs

    compiled.BUILT.unlink()
    (tmp_path / "windows.so").write_bytes(b"a build")  # a suffix Python imports too
    assert compiled.extension() == tmp_path / "windows.so" and compiled.state()[0] == compiled.STALE
