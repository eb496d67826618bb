"""Retention: acknowledged tuples older than FOG_EDGE_RETENTION_DAYS are deleted; nothing else ever is.

A round every RETENTION_EVERY_SECONDS, in slices of RETENTION_SLICE_ROWS (one short write transaction each),
so an edge that has run for days deletes a few minutes' tuples at a time between the loops' own commits
rather than in one statement that holds SQLite's one writer for as long as it takes. The household index's
entries of the deleted tuples are swept after a round (edge_app/household_index.py).
"""

import logging
import time
from datetime import timedelta

from django.utils import timezone

from edge_app.models import WindowAggregate

log = logging.getLogger("fog.edge")

RETENTION_EVERY_SECONDS = 600
RETENTION_SLICE_ROWS = 5_000


def delete_expired(days, now=None, limit=None):
    """Delete acknowledged tuples acknowledged over `days` days before `now`: at most `limit` (None: all of
    them, a slice at a time). How many were deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while limit is None or deleted < limit:
        size = RETENTION_SLICE_ROWS if limit is None else min(RETENTION_SLICE_ROWS, limit - deleted)
        ids = WindowAggregate.objects.expired(cutoff).values("id")[:size]
        gone, _ = WindowAggregate.objects.filter(id__in=ids).delete()
        deleted += gone
        if gone < size:
            break
    return deleted


class Retention:
    """Rounds of delete_expired, a slice per step; `on_deleted` is called after a round that deleted any."""

    def __init__(self, days, on_deleted=lambda: None, every_seconds=RETENTION_EVERY_SECONDS, clock=time.monotonic):
        self.days, self.on_deleted, self.every_seconds, self.clock = days, on_deleted, every_seconds, clock
        self.next_round = 0.0
        self.cutoff_now = None  # the moment the round underway counts its cut-off from
        self.deleted = 0

    def handle_one_slice(self):
        """Delete one slice of the round underway, or begin one when it is due. True if it did any work."""
        if self.cutoff_now is None:
            if self.clock() < self.next_round:
                return False
            self.next_round = self.clock() + self.every_seconds
            self.cutoff_now, self.deleted = timezone.now(), 0
        gone = delete_expired(self.days, now=self.cutoff_now, limit=RETENTION_SLICE_ROWS)
        self.deleted += gone
        if gone < RETENTION_SLICE_ROWS:
            if self.deleted:
                log.info("retention: deleted %d acknowledged tuples older than %d days", self.deleted, self.days)
                self.on_deleted()
            self.cutoff_now = None
        return True
