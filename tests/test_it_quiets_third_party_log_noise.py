"""Third-party log noise becomes one line a minute; the pipeline's own warnings all show (issue 18).

Through the console handler that settings.LOGGING configures, as every
command and worker uses it.
"""

import io
import logging

import pytest

SLOW_TASK = ("Task <Task fetch> ran for 0.472s (>0.100s threshold). It is blocking the event loop -- likely a "
             "tight sync loop inside a coroutine. Other pollers will time out.")


@pytest.fixture
def console():
    handler = logging.getLogger("fog").handlers[0]
    summary = next(f for f in handler.filters if type(f).__name__ == "ThirdPartySummary")
    now = [1000.0]
    saved = summary.clock, summary.budget, handler.stream
    summary.clock, summary.budget = (lambda: now[0]), {}
    stream = io.StringIO()
    handler.setStream(stream)
    yield stream, now
    summary.clock, summary.budget = saved[:2]
    handler.setStream(saved[2])


def test_it_shows_one_slow_task_warning_a_minute_and_counts_the_rest(console):
    stream, now = console
    selector = logging.getLogger("kafka.net.selector")
    for _ in range(40):
        selector.warning(SLOW_TASK)
        now[0] += 1  # one every second
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "blocking the event loop" in lines[0]
    now[0] += 30
    selector.warning(SLOW_TASK)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("[and 39 more WARNING lines from kafka in the last 60 s, not shown]")


def test_it_never_holds_back_the_pipelines_own_warnings(console):
    stream, _ = console
    for i in range(25):
        logging.getLogger("kafka.coordinator").warning("third-party repeat %d", i)
        logging.getLogger("fog.edge").warning("edge warning %d", i)
    lines = stream.getvalue().splitlines()
    assert sum("edge warning" in line for line in lines) == 25
    assert sum("third-party repeat" in line for line in lines) == 1


def test_it_keeps_an_error_visible_behind_a_flood_of_warnings(console):
    stream, _ = console
    for _ in range(10):
        logging.getLogger("kafka.net.selector").warning(SLOW_TASK)
    logging.getLogger("kafka.coordinator").error("Error sending OffsetCommitRequest")
    assert sum("OffsetCommitRequest" in line for line in stream.getvalue().splitlines()) == 1
