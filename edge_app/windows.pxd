# The C types of edge_app/windows.py, for Cython (`make build`: edge_app/compiled.py): compiled, the book's classes
# are extension types whose fields are C values, and the hot loops read them as such instead of through attribute
# lookups. windows.py stays plain Python and runs as it is where nothing was compiled; both must keep the same
# names and signatures (tests/test_it_windows_the_same_compiled_or_not.py drives the two side by side).
cimport cython


# no_gc: neither class can be part of a reference cycle (a window holds ints, a set of ints and a dict of ints; a
# household its windows and a set of ints), so the collector need not walk the hundreds of thousands of them.
@cython.no_gc
cdef class OpenWindow:
    cdef public long long start, partition, first_offset, count
    cdef public double total, touched, live_until
    cdef public object others
    cdef public set stamps


@cython.no_gc
cdef class Household:
    cdef public dict windows
    cdef public long long newest_ts, closed_until, ahead_ts, newest_at, phase, partition
    cdef public set closed_ahead
    cdef public double last_seen
    cdef public bint confirmed


cdef class WindowBook:
    cdef public long long window_ms, grace_ms, live_grace_ms, live_entries, open_count, spread
    cdef public double idle_seconds, idle_live, idle_base, forget_base
    cdef public bint stagger, keyed
    cdef public dict households, live_due, opened, last_opened, moved
    cdef public list closed, live_times
    cdef public set unordered

    @cython.locals(state=Household, window=OpenWindow, ts="long long", newest="long long", start="long long",
                   end="long long", reach="long long", open_start="long long", late="long long",
                   duplicates="long long", window_ms="long long", grace_ms="long long", live_grace_ms="long long",
                   live_clock=bint, wall="long long", live_until=double, live=bint, far=bint)
    cpdef tuple add_many(self, readings, long long partition, long long offset, double now, wall_ms=*)

    @cython.locals(state=Household, window=OpenWindow, clock="long long", end="long long", start="long long",
                   due="long long", due_at="long long", window_ms="long long", grace="long long",
                   open_count="long long", spread="long long", taken_all="long long", taken="long long",
                   left="long long", before="long long", average=double, partition="long long")
    cpdef long long close_live(self, long long wall_ms, read_ms=*, limit=*) except? -1
