"""The sender claims its next batch in one statement (UPDATE ... RETURNING): the oldest sendable tuples in id
order, marked SENT with one more attempt, and those to resend (a cloud store lost them) only where these leave
room; tuples in backoff, SENT, ACKED or REFUSED stay as they are. The ORM's two steps, kept for SQLite before
3.35, claim exactly the same."""

from datetime import timedelta

import pytest
from django.utils import timezone

from edge_app.models import Status, WindowAggregate
from edge_app.sender import Sender
from tests.conftest import EDGE_ID, EDGE_SECRET
from tooling.net import free_port

T0 = 1_577_142_000_000

pytestmark = [pytest.mark.edge_db, pytest.mark.django_db]  # raw SQL on both engines


def _seed():
    """12 tuples: every third waits out a backoff, two are SENT, one ACKED, one REFUSED, one to resend; the rest
    (5) are sendable, that one after them."""
    later = timezone.now() + timedelta(minutes=5)
    rows = []
    for i in range(12):
        status = {1: Status.RESEND, 4: Status.SENT, 5: Status.ACKED, 7: Status.REFUSED, 10: Status.SENT}.get(
            i, Status.PENDING)
        rows.append(WindowAggregate(household=f"house-{i}", window_start=T0 + i * 5000, window_end=T0 + i * 5000 + 5000,
                                    day="2019-12-24", average_w=100.0 + i, readings=3, status=status,
                                    attempts=1 if i % 3 == 0 else 0,
                                    next_attempt_at=later if i % 3 == 0 and i else None))
    WindowAggregate.objects.bulk_create(rows)
    ids = list(WindowAggregate.objects.order_by("id").values_list("id", flat=True))
    sendable = [ids[i] for i in (0, 2, 8, 11, 1)]  # 3, 6 and 9 wait; 4, 5, 7, 10 are not PENDING; 1 comes last
    return ids, sendable


@pytest.fixture
def sender():
    sender = Sender(edge_id=EDGE_ID, secret=EDGE_SECRET, address=f"tcp://127.0.0.1:{free_port()}", batch=3)
    yield sender
    sender.in_flight.clear()  # nothing was sent: close() must not put these back
    sender.close()


@pytest.mark.parametrize("claim", ["_next_batch", "claim_with_orm"])
def test_it_claims_the_oldest_sendable_tuples_and_marks_them_sent(sender, claim):
    ids, sendable = _seed()
    before = {row.id: row for row in WindowAggregate.objects.all()}
    first = getattr(sender, claim)()
    second = getattr(sender, claim)()
    assert [row[0] for row in first] == sendable[:3] and [row[0] for row in second] == sorted(sendable[3:])
    assert first[0][1:] == ("house-0", T0, T0 + 5000, 100.0, 3)
    assert getattr(sender, claim)() == []
    after = {row.id: row for row in WindowAggregate.objects.all()}
    for tid, row in after.items():
        if tid in sendable:
            assert row.status == Status.SENT and row.sent_at is not None
            assert row.attempts == before[tid].attempts + 1
        else:
            assert (row.status, row.attempts, row.sent_at) == (before[tid].status, before[tid].attempts,
                                                               before[tid].sent_at)


def test_it_claims_a_tuple_whose_backoff_is_over(sender):
    ids, sendable = _seed()
    WindowAggregate.objects.filter(id=ids[3]).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    first, second = ([row[0] for row in sender._next_batch()] for _ in range(2))
    assert first == [ids[0], ids[2], ids[3]] and second == [ids[1], ids[8], ids[11]]
