"""The edge's admin, built to stay fast with tens of millions of tuples.

Every query a page runs is bounded by an index: the list reads one page in
index order, the counts (per status in the header, and the paginator's)
stop at COUNT_CAP, the day filter offers days from two index seeks instead
of a date drill-down that scans, the household filter and search are ranges of
the household index (HouseholdEntry, built in sorted runs: it trails the newest
tuples by up to a minute, and the page says how far it reaches), and columns
are not sortable (a sort by any other column would read the whole table).
tests/test_it_keeps_the_admin_fast.py checks the SQL so a scan cannot creep back.

Times are shown in the operator's time zone (FOG_TIME_ZONE) with the UTC
value on hover and, on the change page, written out.
"""

from datetime import date, datetime, timedelta, UTC
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin import ShowFacets
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _

from edge_app.household_index import HOUSEHOLD_INDEX_EVERY_SECONDS
from edge_app.models import (IN_CHUNK, LINK_HISTORY_KEEP, SET_ASIDE_KEEP, UNANSWERED, EdgeStatus, HouseholdIndexMark,
                             LinkChange, SetAsideMessage, Status, WindowAggregate)
from fogwire import protocol as wire

# Counts stop here: an index range of this many entries costs milliseconds on
# either database, while an exact count of 10 million rows costs seconds.
COUNT_CAP = 10_000
DAYS_OFFERED = 14  # the day filter's choices, newest first
LINK_HISTORY_SHOWN = 20
PER_PAGE = 100


def when(moment):
    """A timestamp in the operator's time zone, its UTC value on hover."""
    if moment is None:
        return "-"
    utc = moment.astimezone(UTC)
    local = timezone.localtime(moment)
    return format_html('<time datetime="{}" title="{} UTC">{}</time>', utc.isoformat(),
                       utc.strftime("%Y-%m-%d %H:%M:%S"), local.strftime("%Y-%m-%d %H:%M:%S %Z"))


def when_in_full(moment):
    """The change page's form: local time and UTC, both written out."""
    if moment is None:
        return "-"
    utc = moment.astimezone(UTC)
    return (f"{timezone.localtime(moment).strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]} "
            f"{timezone.localtime(moment).tzname()} ({utc.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]} UTC)")


def epoch_ms(ms):
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def span(delta):
    """'1 h 02 min', '4.2 s', '85 ms': a duration an operator reads at a glance."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def counted(number):
    return f"at least {COUNT_CAP:,}" if number >= COUNT_CAP else f"{number:,}"


class CappedPaginator(Paginator):
    """Counts at most COUNT_CAP rows (one index range); pages beyond that are reached by filtering."""

    @cached_property
    def count(self):
        return self.object_list.capped_count(COUNT_CAP)

    @property
    def capped(self):
        return self.count >= COUNT_CAP


# The household index's order: unique, since an entry's (household, window_start) is, and a tuple has one entry.
BY_HOUSEHOLD = ("-household_entries__household", "-household_entries__window_start")


class BoundedChangeList(ChangeList):
    """Django reads a short result unsliced ("not multi_page", "show all"); a LIMIT keeps every read bounded."""

    def _get_deterministic_ordering(self, ordering):
        # Django sees no unique key in a related model's fields and adds the id, which makes PostgreSQL sort.
        if tuple(ordering[:len(BY_HOUSEHOLD)]) == BY_HOUSEHOLD:
            return list(BY_HOUSEHOLD)
        return super()._get_deterministic_ordering(ordering)

    def get_results(self, request):
        super().get_results(request)
        if not self.result_list.query.is_sliced:
            self.result_list = self.result_list[:max(self.list_per_page, self.list_max_show_all)]


class StatusFilter(admin.SimpleListFilter):
    """By delivery status; the admin's own parameter, so its URLs stay the same."""

    title = "status"
    parameter_name = "status__exact"

    def lookups(self, request, model_admin):
        return [(str(int(status)), status.label) for status in Status]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            return queryset.of_status(Status(int(self.value())))
        except ValueError:
            raise IncorrectLookupParameters(f"status={self.value()!r}: expected one of "
                                            f"{', '.join(str(int(s)) for s in Status)}") from None


class RefusalFilter(admin.SimpleListFilter):
    """Refused tuples by the cloud's reason. The choices are fogwire's permanent reason words (no
    DISTINCT over the table); the filter reads REFUSED tuples only, through the (status, id) index."""

    title = "refusal reason"
    parameter_name = "refusal"

    def lookups(self, request, model_admin):
        words = {value for name, value in vars(wire).items() if name.startswith("R_")} - wire.TRANSIENT - wire.RETRIED
        return [(word, word) for word in sorted(words)]

    def queryset(self, request, queryset):
        return queryset.of_status(Status.REFUSED).filter(refusal=self.value()) if self.value() else queryset


class DayFilter(admin.SimpleListFilter):
    """Single UTC days, newest first: the (day, id) index serves each in id order."""

    title = "day (UTC)"
    parameter_name = "day"

    def lookups(self, request, model_admin):
        days = WindowAggregate.objects.order_by("-day").values_list("day", flat=True)
        newest, oldest = days[:1], days.reverse()[:1]
        if not newest:
            return []
        first = max(oldest[0], newest[0] - timedelta(days=DAYS_OFFERED - 1))
        count = (newest[0] - first).days + 1
        return [((newest[0] - timedelta(days=i)).isoformat(), (newest[0] - timedelta(days=i)).isoformat())
                for i in range(count)]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            return queryset.filter(day=date.fromisoformat(self.value()))
        except ValueError:
            raise IncorrectLookupParameters(f"day={self.value()!r}: expected a date such as 2019-12-24") from None


class HouseholdFilter(admin.SimpleListFilter):
    """One household exactly (click a household in the list); the household index serves it."""

    title = "household"
    parameter_name = "household"

    def lookups(self, request, model_admin):
        value = request.GET.get(self.parameter_name)
        return [(value, value)] if value else [("", "click a household in the list")]

    def queryset(self, request, queryset):
        return queryset.filter(household_entries__household=self.value()) if self.value() else queryset


@admin.register(WindowAggregate)
class WindowAggregateAdmin(admin.ModelAdmin):
    list_display = ("id", "household_link", "window_start_local", "average", "readings", "status", "postal_code",
                    "attempts", "refusal", "latency", "acked")
    list_filter = (StatusFilter, RefusalFilter, DayFilter, HouseholdFilter)
    search_fields = ("household",)  # the box; get_search_results makes it a prefix range
    search_help_text = "Households whose name starts with this (case-sensitive)."
    ordering = ("-id",)
    sortable_by = ()  # a sort by any column but the index order reads the whole table
    list_per_page = PER_PAGE
    show_full_result_count = False
    show_facets = ShowFacets.NEVER  # a count per filter choice is a scan per choice
    paginator = CappedPaginator
    actions = ("send_again",)
    # Shown on the change page in place of the raw fields they format.
    FORMATTED = {"window_start": "window_from", "window_end": "window_to", "average_w": "average", "created_at": "created",
                 "sent_at": "sent", "acked_at": "acknowledged"}

    def get_changelist(self, request, **kwargs):
        return BoundedChangeList

    def get_fields(self, request, obj=None):
        fields = [self.FORMATTED.get(f.name, f.name) for f in self.model._meta.fields]
        after = fields.index("acknowledged") + 1
        return [*fields[:after], "latency", *fields[after:]]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request)  # the action; a tuple's page has no Save

    def has_delete_permission(self, request, obj=None):
        return False  # retention deletes acknowledged tuples, and nothing else ever does

    def get_ordering(self, request):
        """The order of the index that serves the page's filter, so no page sorts or skips millions of rows."""
        if self._by_household(request):
            return BY_HOUSEHOLD
        if request.GET.get(DayFilter.parameter_name):
            return self.ordering  # the (day, id) index
        if request.GET.get(StatusFilter.parameter_name) or request.GET.get(RefusalFilter.parameter_name):
            return ("-status", "-id")  # the (status, id) index: see of_status
        return self.ordering

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # The range is what the index answers; the LIKE keeps the match exact on any collation.
        # The ingest refuses non-printable names, so no household holds U+10FFFF.
        return queryset.filter(household_entries__household__gte=term,
                               household_entries__household__lt=term + "\U0010ffff",
                               household_entries__household__startswith=term), False

    @staticmethod
    def _by_household(request):
        return bool(request.GET.get("q") or request.GET.get(HouseholdFilter.parameter_name))

    def action_checkbox(self, obj):
        # Django renders a form widget's template for this in every row, a quarter of the list's CPU time.
        return format_html('<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
                           helpers.ACTION_CHECKBOX_NAME, obj.pk, _("Select this object for an action - {}").format(obj))

    @admin.display(description="household")
    def household_link(self, obj):
        return format_html('<a href="?{}" title="only this household">{}</a>',
                           urlencode({HouseholdFilter.parameter_name: obj.household}), obj.household)

    @admin.display(description="window start")
    def window_start_local(self, obj):
        return when(epoch_ms(obj.window_start))

    @admin.display(description="window start (inclusive)")
    def window_from(self, obj):
        return f"{when_in_full(epoch_ms(obj.window_start))}, {obj.window_start} ms"

    @admin.display(description="window end (exclusive)")
    def window_to(self, obj):
        return f"{when_in_full(epoch_ms(obj.window_end))}, {obj.window_end} ms"

    @admin.display(description="average")
    def average(self, obj):
        return f"{obj.average_w:,.1f} W"

    @admin.display(description="delivery latency")
    def latency(self, obj):
        return span(obj.acked_at - obj.created_at) if obj.acked_at else "-"

    @admin.display(description="created (window closed)")
    def created(self, obj):
        return when_in_full(obj.created_at)

    @admin.display(description="sent")
    def sent(self, obj):
        return when_in_full(obj.sent_at)

    @admin.display(description="acknowledged")
    def acked(self, obj):
        return when(obj.acked_at)

    @admin.display(description="acknowledged")
    def acknowledged(self, obj):
        return when_in_full(obj.acked_at)

    # "change": it changes tuples, so a user who may only view them is neither offered it nor let run it.
    @admin.action(permissions=["change"],
                  description="Send again (also refused ones, after a fix; the cloud's dedup makes it safe)")
    def send_again(self, request, queryset):
        """Back to PENDING: for a REFUSED tuple once its cause is fixed (the cloud's limits, its owner, the quota);
        an acknowledged one a cloud lost to RESEND, as the sender puts back one it acknowledged before, so a
        selection of millions does not fill the backlog the disk budget bounds (its next acknowledgement is not
        counted again: Sender.mark_acked). A SENT tuple is in flight: sent again now it went twice, its reply
        applied to the other copy. A few hundred rows a statement, each committed: the loops write in between."""
        queryset, changed, last = queryset.exclude(status=Status.SENT).order_by("id"), 0, 0
        while ids := list(queryset.filter(id__gt=last).values_list("id", flat=True)[:IN_CHUNK]):
            changed += WindowAggregate.objects.filter(id__in=ids).exclude(status=Status.SENT).update(
                status=UNANSWERED, next_attempt_at=None, refusal="")
            last = ids[-1]
        self.message_user(request, f"{changed} tuples set to be sent again (tuples in flight are left alone).",
                          messages.SUCCESS)

    def changelist_view(self, request, extra_context=None):
        counts = WindowAggregate.objects.capped_counts_by_status(COUNT_CAP)
        context = {"title": "Tuples: " + ", ".join(f"{counted(n)} {label}" for label, n in counts.items())}
        if self._by_household(request):
            mark = HouseholdIndexMark.objects.filter(pk=HouseholdIndexMark.PK).first()  # a page view writes nothing
            context["subtitle"] = (
                f"By household: the tuples indexed by {timezone.localtime(mark.indexed_at):%H:%M:%S %Z}, "
                f"up to tuple {mark.indexed_to:,}" if mark and mark.indexed_at else "By household: no tuple indexed yet"
            ) + f" (the household index takes in the newest tuples every {HOUSEHOLD_INDEX_EVERY_SECONDS:g} s)"
        return super().changelist_view(request, extra_context={**(extra_context or {}), **context})


@admin.register(EdgeStatus)
class EdgeStatusAdmin(admin.ModelAdmin):
    list_display = ("edge_id", "link", "heartbeat", "backlog", "windows", "readings", "late", "duplicates", "malformed",
                    "sent", "acked", "refused", "budget", "paused", "retention_left_seconds", "lost_to_retention", "sent_again",
                    "last_error")

    def get_fields(self, request, obj=None):
        return ["link", "heartbeat", *(f.name for f in self.model._meta.fields
                                        if f.name not in ("id", "connected", "since", "last_heartbeat_at")),
                "link_history"]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # the loops keep these counters: a Save wrote back what it read, undoing what came meanwhile

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="link")
    def link(self, obj):
        state = "up" if obj.connected else "DOWN"
        return format_html("<strong>{}</strong> for {} (since {})", state, span(timezone.now() - obj.since),
                           when(obj.since))

    @admin.display(description="last heartbeat answered")
    def heartbeat(self, obj):
        return when(obj.last_heartbeat_at)

    @admin.display(description=f"link history (newest {LINK_HISTORY_SHOWN} of at most {LINK_HISTORY_KEEP} kept)")
    def link_history(self, obj):
        changes = list(LinkChange.objects.filter(edge_id=obj.edge_id).order_by("-at")[:LINK_HISTORY_SHOWN])
        if not changes:
            return "no change recorded yet"
        rows, until = [], timezone.now()
        for number, change in enumerate(changes):
            lasted = span(until - change.at) + (" so far" if number == 0 else "")
            rows.append(("up" if change.connected else "DOWN", when(change.at), lasted, change.error or ""))
            until = change.at
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html("<table><thead><tr><th>link</th><th>from</th><th>for</th><th>why</th></tr></thead>"
                           "<tbody>{}</tbody></table>", body)


@admin.register(SetAsideMessage)
class SetAsideMessageAdmin(admin.ModelAdmin):
    """The malformed Kafka messages the ingest set aside (edge_app/ingest.py), newest first: where each is, what
    is wrong with it and how it begins. Bounded (SET_ASIDE_KEEP an edge), so its counts cost nothing."""

    list_display = ("seen", "where", "what", "problem")
    list_filter = ("edge_id", "topic")
    fields = ("seen", "edge_id", "topic", "partition", "offset", "what", "problem", "value_bytes", "value_shown")
    readonly_fields = fields
    list_per_page = PER_PAGE

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # a record of what came: an operator looks at it, or deletes it once dealt with

    def changelist_view(self, request, extra_context=None):
        title = f"Set-aside messages (the newest {SET_ASIDE_KEEP:,} an edge are kept)"
        return super().changelist_view(request, extra_context={**(extra_context or {}), "title": title})

    @admin.display(description="read")
    def seen(self, obj):
        return when(obj.seen_at)

    @admin.display(description="where")
    def where(self, obj):
        return f"{obj.topic}[{obj.partition}] offset {obj.offset}"

    @admin.display(description="set aside")
    def what(self, obj):
        if obj.readings is None:
            return "the whole message"
        return f"{obj.readings} reading{'' if obj.readings == 1 else 's'} of its batch"

    @admin.display(description="how it begins")
    def value_shown(self, obj):
        if obj.value is None:
            return "no value (a tombstone)"
        shown = bytes(obj.value).decode("utf-8", "backslashreplace")
        cut = obj.value_bytes is not None and obj.value_bytes > len(obj.value)
        return format_html("<pre style=\"white-space: pre-wrap\">{}</pre>{}", shown,
                           f"… and {obj.value_bytes - len(obj.value):,} bytes more" if cut else "")
