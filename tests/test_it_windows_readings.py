"""The window rules, on the pure WindowBook (no Kafka, no database)."""

from edge_app.windows import WindowBook

T0 = 1_577_142_000_000  # 2019-12-24 00:00 Europe/Berlin, a multiple of 5 s


def book(grace_ms=2000, idle=10):
    return WindowBook(5000, grace_ms, idle)


def add(b, ts, power, household="h", offset=0, now=0.0):
    return b.add(household, ts, power, 0, offset, now)


def test_it_aligns_windows_to_the_epoch():
    b = book()
    add(b, T0 + 3_999, 10.0)
    b.close_all()
    (window,) = b.take_closed()
    assert (window.start, window.end) == (T0, T0 + 5000)
    assert window.start % 5000 == 0


def test_it_puts_a_reading_on_the_boundary_into_the_next_window():
    b = book()
    add(b, T0 + 4_999, 1.0)
    add(b, T0 + 5_000, 3.0)
    b.close_all()
    assert [(w.start, w.average) for w in b.take_closed()] == [(T0, 1.0), (T0 + 5000, 3.0)]


def test_it_closes_a_window_only_when_event_time_passes_end_plus_grace():
    b = book()
    add(b, T0, 10.0)
    add(b, T0 + 6_999, 20.0)  # end + grace not reached yet
    assert b.take_closed() == []
    add(b, T0 + 7_000, 30.0)
    (window,) = b.take_closed()
    assert (window.start, window.average, window.count) == (T0, 10.0, 1)


def test_it_applies_a_straggler_within_grace():
    b = book()
    add(b, T0, 10.0)
    add(b, T0 + 6_000, 99.0)  # the next window, while the first still waits
    assert add(b, T0 + 4_000, 20.0)
    add(b, T0 + 7_000, 99.0)
    assert b.take_closed()[0].average == 15.0


def test_it_counts_a_reading_for_a_closed_window_as_late_and_never_applies_it():
    b = book()
    add(b, T0, 10.0)
    add(b, T0 + 7_000, 1.0)
    (closed,) = b.take_closed()
    assert not add(b, T0 + 1_000, 1000.0)
    assert closed.average == 10.0
    b.close_all()
    assert [w.start for w in b.take_closed()] == [T0 + 5000]


def test_it_counts_a_reading_for_a_window_past_its_deadline_as_late():
    b = book()
    add(b, T0 + 20_000, 1.0)
    assert not add(b, T0, 5.0)  # that window would have closed long ago


def test_it_closes_a_silent_households_windows_after_the_idle_timeout():
    b = book(idle=10)
    add(b, T0, 10.0, household="quiet", now=100.0)
    add(b, T0, 20.0, household="busy", now=108.0)
    assert b.close_idle(now=109.0) == 0
    assert b.close_idle(now=110.0) == 1
    assert [w.household for w in b.take_closed()] == ["quiet"]
    assert not add(b, T0 + 1000, 5.0, household="quiet", now=111.0)  # its window is closed now


def test_it_averages_a_household_with_one_reading():
    b = book()
    add(b, T0 + 2_000, 249.05)
    b.close_all()
    (window,) = b.take_closed()
    assert (window.average, window.count) == (249.05, 1)


def test_it_keeps_households_apart():
    b = book()
    add(b, T0, 10.0, household="a")
    add(b, T0, 30.0, household="b")
    add(b, T0 + 10_000, 0.0, household="a")
    assert [(w.household, w.average) for w in b.take_closed()] == [("a", 10.0)]


def test_it_resumes_from_the_oldest_offset_still_in_an_open_window():
    b = book()
    b.add("a", T0, 1.0, 0, 10, 0.0)
    b.add("b", T0, 1.0, 0, 11, 0.0)
    b.add("a", T0 + 7_000, 1.0, 0, 12, 0.0)  # closes a's first window (offset 10)
    assert b.resume_offsets({0: 13}) == {0: 11}
    b.close_all()
    assert b.resume_offsets({0: 13}) == {0: 13}


def test_it_finds_the_same_resume_offsets_as_a_scan_of_every_open_window():
    import random

    rng = random.Random(7)
    book = WindowBook(5000, 2000, 30)
    offsets = {p: 0 for p in range(4)}
    for step in range(20_000):
        household = f"h{rng.randrange(300)}"
        partition = hash(household) % 4  # keyed: a household stays in its partition
        ts = 1_577_142_000_000 + step * 10 + rng.randrange(-3000, 3000)  # out of order within the grace
        book.add(household, ts, 1.0, partition, offsets[partition], step / 100)
        offsets[partition] += 1
        if step % 997 == 0:
            book.close_idle(step / 100)
        if step % 101 == 0:
            scan = dict(offsets)
            for state in book.households.values():
                for window in state.windows.values():
                    scan[window.partition] = min(scan[window.partition], window.first_offset)
            assert book.resume_offsets(offsets) == scan


def test_it_resumes_from_the_oldest_offset_after_reading_a_partition_again_from_its_start():
    book = WindowBook(5000, 2000, 30)
    book.add("h1", 1_577_142_000_000, 1.0, 0, 5000, 0.0)
    book.add("h2", 1_577_142_001_000, 1.0, 0, 3, 0.0)  # the topic was made anew: read again from offset 0
    assert book.resume_offsets({0: 10}) == {0: 3}


def test_it_forgets_closed_far_ahead_windows_of_a_live_household():
    t0 = 1_800_000_000_000
    book = WindowBook(5000, 2000, 600, live_grace_ms=1000)
    for step in range(1000):  # a live meter, a reading every 10 s, each with a stray reading an hour ahead
        now = t0 + step * 10_000
        book.add("h", now, 1.0, 0, 2 * step, step * 10.0, wall_ms=now)
        book.add("h", now + 3_600_000 + 5000, 1.0, 0, 2 * step + 1, step * 10.0, wall_ms=now)
        book.close_live(now + 9000)
        book.close_idle(step * 10.0 + 700)  # the stray windows time out
    # Only the strays of the last hour are remembered (360 readings), not every one since the start.
    assert len(book.households["h"].closed_ahead) <= 361


def test_it_counts_open_windows_as_a_scan_of_every_household_would():
    """And the live timetable's count is exactly its entries, each of its times in its heap once and with
    entries, through live closes (a part at a time or all that are due), idle closes and silent households
    forgotten."""
    import random

    rng = random.Random(11)
    book = WindowBook(5000, 2000, 30, live_grace_ms=1000)
    wall = 1_577_142_000_000
    for step in range(20_000):
        household = f"h{rng.randrange(300 if step % 5000 < 4000 else 30)}"  # now and then most fall silent
        ts = wall + step * 10 + rng.randrange(-3000, 3000)
        book.add(household, ts, 1.0, 0, step, step / 10, wall + step * 10 + rng.randrange(0, 800))
        if step % 13 == 0:
            book.close_live(wall + step * 10, limit=rng.choice((None, 5)))
        if step % 97 == 0:
            book.close_idle(step / 10)
        if step % 101 == 0:
            assert book.open_windows() == sum(len(state.windows) for state in book.households.values())
            assert book.live_entries == sum(len(entries) for entries in book.live_due.values())
            assert sorted(book.live_times) == sorted(book.live_due) and all(book.live_due.values())
    assert len(book.households) < 300  # the idle timeout closed and forgot some
    book.close_all()
    assert book.open_windows() == 0


def test_it_closes_and_forgets_by_the_idle_timeout_as_a_pass_over_every_household_each_time_would():
    """close_idle skips its pass over every household until something can be due: a book that makes
    the pass at every call closes the same windows at the same calls and forgets the same households, through live
    and replayed readings, copies, silences, households whose live clock is lost and a paused ingest."""
    for seed in (1, 5, 7):
        _drive_beside_a_book_that_passes_every_time(seed)


def _drive_beside_a_book_that_passes_every_time(seed):
    import random

    rng = random.Random(seed)
    made = []

    class Counting(WindowBook):  # a subclass: the compiled book's instances take no attributes of their own
        def _pass_idle(self, now):
            made.append(now)
            super()._pass_idle(now)

    skipping, passing = Counting(5000, 2000, 3, live_grace_ms=1000, stagger=True), WindowBook(
        5000, 2000, 3, live_grace_ms=1000, stagger=True)
    wall, now, last = 1_577_142_000_000, 0.0, {}
    for step in range(30_000):
        now += rng.choice((0.0, 0.01, 0.05, 0.5))
        wall_ms = wall + int(now * 1000)
        household = f"h{rng.randrange(40 if step % 9000 < 6000 else 5)}"  # now and then most fall silent
        live = rng.random() < 0.8
        ts = wall_ms - rng.randrange(0, 900) if live else wall - 3_600_000 + step * 7  # a replay: never live
        if household in last and rng.random() < 0.2:  # a copy of its last reading: only "seen"
            ts, live = last[household]
        last[household] = ts, live
        for b in (skipping, passing):
            b.add(household, ts, 1.0, 0, step, now, wall_ms if live else None)
        if step % 17 == 0:
            for b in (skipping, passing):
                b.close_live(wall_ms, read_ms=wall_ms - (0 if step % 5 else 4000), limit=None)
        if step % 700 == 0:  # a pause for the budget (readings applied in it, too: its times run ahead of `now`)
            paused = rng.choice((0.5, 1.5, 6.0))
            for b in (skipping, passing):
                b.shift_idle(paused)
        passing.idle_live = -float("inf")  # a pass at every call
        assert skipping.close_idle(now) == passing.close_idle(now)
        assert sorted(map(repr, skipping.take_closed())) == sorted(map(repr, passing.take_closed()))
        assert skipping.households.keys() == passing.households.keys()
    assert len(made) < 30_000 // 10  # the pass was made at a small part of the calls


def test_it_forgets_a_live_household_six_idle_timeouts_after_its_last_reading_whatever_the_pass_before_found():
    """A pass over an empty book finds nothing that can ever be due; a household that comes after it, live, has its
    window closed by its clock, and is forgotten FORGET_AFTER_IDLES idle timeouts after its reading, as ever."""
    from edge_app.windows import FORGET_AFTER_IDLES

    b = WindowBook(5000, 2000, 10, live_grace_ms=1000)
    assert b.close_idle(100.0) == 0 and not b.households
    b.add("h", T0 + 1000, 1.0, 0, 0, 101.0, wall_ms=T0 + 1000)
    assert b.close_live(T0 + 7000) == 1
    b.close_idle(101.0 + 10 * FORGET_AFTER_IDLES - 0.5)
    assert "h" in b.households
    b.close_idle(101.0 + 10 * FORGET_AFTER_IDLES)
    assert "h" not in b.households


def test_it_closes_at_the_same_call_as_a_pass_would_whatever_the_idle_timeout_rounds_to():
    """A pass closes a window whose latest reading is at most `now - idle`; the skip is tested with the same
    difference, not with `reading + idle`, so an idle timeout that is no binary fraction (7.3 s) does not move a
    close to the next check."""
    b = WindowBook(5000, 2000, 7.3)
    assert b.close_idle(0.0) == 0
    b.add("h", T0, 1.0, 0, 0, 8.510561972152608)
    assert 8.510561972152608 <= 15.810561972152607 - 7.3  # the pass's own test: due, by one float step
    assert b.close_idle(15.810561972152607) == 1


def test_it_forgets_a_household_whose_first_reading_was_late_at_the_next_check():
    b = WindowBook(5000, 2000, 1.0)
    assert b.close_idle(100.0) == 0
    assert not b.add("x", -10_000, 1.0, 0, 0, 100.0)  # late: its window ends before the clock a household starts at
    b.close_idle(100.0)
    assert "x" not in b.households
