"""The edge's database: window tuples with their delivery state, the link
state and the edge's counters, and the Kafka positions the ingest resumes from.

Event times are kept as epoch milliseconds, exactly as they travel on the
wire; `day` (UTC) is derived once at insert for the admin's date filter.
"""

from django.db import models
from django.db.models import Case, Count, Q, Value, When
from django.utils import timezone

from fogwire import protocol as wire


class Status(models.IntegerChoices):
    PENDING = 0, "pending"
    SENT = 1, "sent"
    ACKED = 2, "acknowledged"
    REFUSED = 3, "refused"  # the cloud refused it for a permanent reason (kept in `refusal`): not sent again
    # Acknowledged by a cloud store that lost it since (edge_app/cloud_store.py): sent again once no PENDING
    # tuple waits, so the page stays fresh while millions go; not in the backlog, which bounds the disk the
    # ingest may still fill (these rows are on it already).
    RESEND = 4, "to resend"


IN_CHUNK = 900  # ids in one `IN (...)`, under SQLite's variable limit on old builds


def chunks(items, size=IN_CHUNK):
    """`items` in slices of `size`: ids for one `IN (...)` each."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


# What a SENT tuple without an answer goes back to: PENDING, or RESEND if a cloud store acknowledged it before
# (and lost it since), so a timeout does not move it ahead of the fresh tuples and into the backlog.
UNANSWERED = Case(When(acked_at__isnull=True, then=Value(Status.PENDING)), default=Value(Status.RESEND))

# Counted by index range; ACKED by EdgeStatus.acked. Retention deletes none of them.
OPEN_STATUSES = (Status.PENDING, Status.SENT, Status.REFUSED, Status.RESEND)


class WindowAggregateQuerySet(models.QuerySet):
    def sendable(self, now=None, status=Status.PENDING):
        """Tuples of `status` whose backoff (after a refusal) has passed, oldest first."""
        now = now or timezone.now()
        return self.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
                           status=status).order_by("id")

    def of_status(self, status):
        """Tuples of one status, read through the (status, id) index in its order.

        A range, not `status = x`: given an equality PostgreSQL treats the status
        as a constant, orders by id alone and walks the primary key backwards,
        stepping over every newer tuple of another status (EXPLAIN ANALYZE at 10
        million tuples: 100,000 rows removed by the filter before the first
        acknowledged one, a cost that grows with the backlog). SQLite reads the
        same index either way.
        """
        return self.filter(status__gte=status, status__lte=status)

    def acked_since(self, since):
        """ACKED tuples acknowledged at `since` or later: a range of the partial `retention_acked` index, the
        open statuses excluded as in `expired` (so SQLite does not take the (status, id) index instead)."""
        return self.filter(acked_at__gte=since).exclude(status__in=OPEN_STATUSES)

    def refused_by_reason(self):
        """{reason: number} of REFUSED tuples."""
        rows = self.filter(status=Status.REFUSED).order_by().values("refusal").annotate(n=Count("id"))
        return {row["refusal"]: row["n"] for row in rows}

    def backlog(self):
        return self.filter(status__in=(Status.PENDING, Status.SENT))

    def undelivered(self):
        """The backlog and the tuples to resend: what a finite run waits for."""
        return self.filter(status__in=(Status.PENDING, Status.SENT, Status.RESEND))

    def open_counts(self):
        """{label: number} of the tuples not acknowledged: pending, sent, refused and to resend.

        Each is one range of the (status, id) index, bounded by the disk budget
        (pending, sent) and the refusals. The acknowledged ones, nearly all the
        table, are not counted here: a count of them reads millions of index
        entries, so the edge counts them as it acknowledges them (EdgeStatus.acked).
        """
        return {status.label: self.filter(status=status).count() for status in OPEN_STATUSES}

    def capped_count(self, cap):
        """How many rows match, counting no further than `cap` (an index range of at most cap entries)."""
        return self.order_by().values("pk")[:cap].count()

    def capped_counts_by_status(self, cap):
        """{label: count} per status, each capped at `cap`: the (status, id) index, never a scan of the table."""
        return {status.label: self.filter(status=status).capped_count(cap) for status in Status}

    def expired(self, before):
        """ACKED tuples acknowledged before `before`: the only ones retention may delete.

        One range of the partial `retention_acked` index (acked_at is set when a tuple is acknowledged). A
        tuple sent again from the admin keeps its old acked_at while it is open again, so the open statuses are
        excluded too: as NOT IN, which SQLite (no statistics on an edge's database) checks row by row in
        that range, where `status = ACKED` would make it take the (status, id) index and read every
        acknowledged tuple."""
        return self.filter(acked_at__lt=before).exclude(status__in=OPEN_STATUSES)


class WindowAggregate(models.Model):
    household = models.CharField(max_length=128)
    window_start = models.BigIntegerField(help_text="event time, epoch ms, inclusive")
    window_end = models.BigIntegerField(help_text="event time, epoch ms, exclusive")
    day = models.DateField(help_text="UTC day of window_start")
    average_w = models.FloatField()
    readings = models.PositiveIntegerField()
    status = models.PositiveSmallIntegerField(choices=Status.choices, default=Status.PENDING)
    postal_code = models.CharField(max_length=5, blank=True)
    refusal = models.CharField(max_length=64, blank=True, help_text="the cloud's last reason for refusing it")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="backoff after a refusal")
    attempts = models.PositiveIntegerField(default=0)

    objects = WindowAggregateQuerySet.as_manager()

    class Meta:
        constraints = [
            # Replays of closed windows from Kafka after a crash are absorbed here. Window first, so the ingest's
            # inserts go in at the index's end: in household order every tuple took an index page of its own
            # once households had a history (`bench store`). HouseholdEntry serves the household lookups.
            models.UniqueConstraint(fields=["window_start", "household"], name="one_tuple_per_window_household"),
        ]
        indexes = [
            # The sender: next PENDING tuples in id order; the backlog count.
            models.Index(fields=["status", "id"], name="sender_next"),
            # Retention: ACKED tuples older than the cut-off (acked_at is set when a tuple is acknowledged).
            # Partial, so a tuple enters it once, when acknowledged: the ingest's INSERT and the sender's
            # claim leave it alone (a (status, acked_at) index was written at all three).
            models.Index(fields=["acked_at"], condition=Q(acked_at__isnull=False), name="retention_acked"),
            # The admin's day filter, newest first within the day (SQLite's index
            # carries the rowid anyway; PostgreSQL needs id in the key to skip a sort).
            models.Index(fields=["day", "id"], name="admin_day_id"),
        ]

    def __str__(self):
        return f"{self.household} @ {self.window_start} ({self.get_status_display()})"


class HouseholdEntry(models.Model):
    """A tuple's place in the household index, which the admin's household filter and search read tuples through.

    Built in sorted runs away from the ingest (edge_app/household_index.py), so it trails the newest tuples by
    up to HOUSEHOLD_INDEX_EVERY_SECONDS. `aggregate` is no constraint: retention deletes tuples without
    touching this table, whose entries of deleted tuples are swept in index order; a join skips them until."""

    household = models.CharField(max_length=128)
    window_start = models.BigIntegerField()
    aggregate = models.ForeignKey(WindowAggregate, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                                  related_name="household_entries")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["household", "window_start"], name="household_index")]
        verbose_name_plural = "household entries"


class HouseholdIndexMark(models.Model):
    """How far the household index reaches: every tuple whose id is at most `indexed_to` has its entry."""

    indexed_to = models.BigIntegerField(default=0)
    indexed_at = models.DateTimeField(null=True, blank=True, help_text="when the last sorted run was merged")

    PK = 1  # the one row

    @classmethod
    def get(cls):
        return cls.objects.get_or_create(pk=cls.PK)[0]


class EdgeStatus(models.Model):
    """The link to the cloud as the heartbeat sees it, and the edge's running counters."""

    edge_id = models.CharField(max_length=64, unique=True)
    connected = models.BooleanField(default=False)
    since = models.DateTimeField(default=timezone.now, help_text="when `connected` last changed")
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    backlog = models.PositiveIntegerField(default=0)
    windows = models.PositiveBigIntegerField(default=0, help_text="tuples the ingest stored (a replayed window "
                                             "already stored is not counted again)")
    readings = models.PositiveBigIntegerField(default=0)
    late = models.PositiveBigIntegerField(default=0)
    duplicates = models.PositiveBigIntegerField(default=0, help_text="readings at a time their household's open "
                                                "window already had a reading for (not applied)")
    malformed = models.PositiveBigIntegerField(default=0)
    sent = models.PositiveBigIntegerField(default=0)
    acked = models.PositiveBigIntegerField(default=0)
    refused = models.PositiveBigIntegerField(default=0)
    # Long outages (edge_app/budget.py)
    budget = models.PositiveBigIntegerField(default=0, help_text="backlog (tuples) at which the ingest pauses")
    paused = models.BooleanField(default=False, help_text="the ingest stopped reading Kafka: backlog at the budget")
    retention_left_seconds = models.FloatField(
        null=True, blank=True, help_text="time before Kafka may delete the oldest reading the edge still needs "
        "(empty: nothing unread, or no retention limit)")
    retention_checked_at = models.DateTimeField(null=True, blank=True)
    lost_to_retention = models.PositiveBigIntegerField(
        default=0, help_text="Kafka records (a reading, or a batch of readings) Kafka deleted before the edge "
        "read them")
    cloud_store = models.CharField(max_length=wire.MAX_STORE_ID, blank=True, help_text="identity of the cloud store that "
                                   "acknowledged this edge's tuples, from the heartbeat's reply (another one: "
                                   "the store was emptied or replaced, and they are sent again; lost-<identity> "
                                   "while what that store lost is sent again)")
    cloud_store_since = models.DateTimeField(null=True, blank=True, help_text="when cloud_store was recorded: the "
                                             "heartbeats ask that store about tuples acknowledged since")
    sent_again = models.PositiveBigIntegerField(default=0, help_text="acknowledged tuples sent again because "
                                                "the cloud's store was emptied, replaced or set back in time")

    class Meta:
        verbose_name_plural = "edge status"

    def __str__(self):
        return f"{self.edge_id}: {'connected' if self.connected else 'offline'}"

    @classmethod
    def for_edge(cls, edge_id):
        return cls.objects.get_or_create(edge_id=edge_id)[0]


# The link history is for an operator's eyes (when was the link down, for
# how long); it is kept short so a flapping link cannot grow the database.
LINK_HISTORY_KEEP = 200


class LinkChange(models.Model):
    """One up/down transition of the link to the cloud, as the heartbeat saw it."""

    edge_id = models.CharField(max_length=64)
    at = models.DateTimeField()
    connected = models.BooleanField()
    error = models.CharField(max_length=300, blank=True, help_text="why the link went down")

    class Meta:
        indexes = [models.Index(fields=["edge_id", "-at"], name="link_history")]
        ordering = ["-at"]

    def __str__(self):
        return f"{self.edge_id} {'up' if self.connected else 'down'} at {self.at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def record(cls, edge_id, connected, at, error=""):
        """Add one transition and drop this edge's oldest beyond LINK_HISTORY_KEEP."""
        cls.objects.create(edge_id=edge_id, connected=connected, at=at, error=error[:300])
        _keep_newest(cls.objects.filter(edge_id=edge_id), "at", LINK_HISTORY_KEEP)


def _keep_newest(rows, field, keep):
    """Delete those of `rows` past the newest `keep` by `field` (a table kept short, one edge's rows)."""
    cut = rows.order_by(f"-{field}").values_list(field, flat=True)[keep:keep + 1]
    if cut:
        rows.filter(**{f"{field}__lte": cut[0]}).delete()


# Malformed Kafka messages are kept for an operator to look at (what was wrong, where, and how the message began);
# the newest SET_ASIDE_KEEP an edge, so a flood of bad messages cannot grow the database.
SET_ASIDE_KEEP = 10_000
SET_ASIDE_VALUE_BYTES = 1024  # a message's first bytes kept: enough to see what it is, not a copy of a flood
SET_ASIDE_PROBLEM_CHARS = 500


class SetAsideMessage(models.Model):
    """A Kafka message the ingest could not use whole: unreadable (`readings` empty), or a batch some of whose
    readings were set aside. Written with the counters and positions that count it, so a replay keeps it once."""

    edge_id = models.CharField(max_length=64)
    topic = models.CharField(max_length=249)
    partition = models.PositiveIntegerField()
    offset = models.BigIntegerField()
    readings = models.PositiveIntegerField(null=True, blank=True, help_text="readings of the batch set aside "
                                           "(empty: the message as a whole)")
    problem = models.CharField(max_length=SET_ASIDE_PROBLEM_CHARS)
    value = models.BinaryField(null=True, blank=True, help_text=f"the message's first {SET_ASIDE_VALUE_BYTES} "
                               "bytes (empty: a tombstone)")
    value_bytes = models.PositiveIntegerField(null=True, blank=True, help_text="the message's length")
    seen_at = models.DateTimeField(help_text="when the ingest read it")

    class Meta:
        indexes = [models.Index(fields=["edge_id", "-id"], name="set_aside_newest")]
        ordering = ["-id"]

    def __str__(self):
        return f"{self.topic}[{self.partition}] offset {self.offset}"

    @classmethod
    def keep(cls, edge_id, messages):
        """Add these (unsaved) messages and drop this edge's oldest beyond SET_ASIDE_KEEP."""
        if not messages:
            return
        cls.objects.bulk_create(messages)
        _keep_newest(cls.objects.filter(edge_id=edge_id), "id", SET_ASIDE_KEEP)


class IngestPosition(models.Model):
    """Where the ingest resumes per partition, written with the aggregates it covers.

    `resume_offset` is the oldest offset still inside an open window (replayed
    after a crash); `counted_offset` is the first not yet counted, so replays
    are not counted twice in the edge's counters.
    """

    edge_id = models.CharField(max_length=64)
    topic = models.CharField(max_length=249)
    partition = models.PositiveIntegerField()
    resume_offset = models.BigIntegerField()
    counted_offset = models.BigIntegerField()
    topic_id = models.CharField(max_length=36, blank=True, default="",
                                help_text="the broker's id of the topic these offsets are in ('' if not known): "
                                "a topic deleted and made again has another, and offsets of its own")
    windows = models.CharField(max_length=32, blank=True, default="",
                               help_text="the window layout (FOG_WINDOW_SECONDS, FOG_WINDOW_STAGGER) of the open "
                               "windows the readings from resume_offset on belong to ('' if not known)")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["edge_id", "topic", "partition"], name="one_position_per_partition"),
        ]
