"""The API's shapes: what each endpoint answers and which query parameters it takes, with their bounds.

The views serialize every reply through these, so the OpenAPI schema drf-spectacular derives from them
is what the API sends; the query serializers validate parameters and give the schema their limits.
"""

from rest_framework import serializers

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Redis ranges take 64-bit offsets; 10^9 pages of 500 stay far inside them, and far beyond any real page.
MAX_PAGE = 1_000_000_000
MAX_NUMBER_TEXT = 20  # digits of a query number read at all: int() of a longer text costs time for nothing
RECENT_LIMIT = 50
MAX_RECENT_LIMIT = 200


class WholeNumberField(serializers.IntegerField):
    """An integer written in digits only: DRF's IntegerField would also take '1.0' or ' 1 ', which the
    schema's `integer` does not allow, and would read `?page=` as no page at all."""

    MAX_STRING_LENGTH = MAX_NUMBER_TEXT

    def __init__(self, *, min_value, max_value, **kwargs):
        # Whatever is wrong with it ('-1', 'ten', '1.0'), the answer says what would be right: DRF's "A valid
        # integer is required." for '-1' left a caller guessing. Given to DRF, which words its range checks with them.
        wanted = f"a whole number from {min_value} to {max_value}, in digits, is required."
        messages = dict.fromkeys(("invalid", "min_value", "max_value", "max_string_length"), wanted)
        super().__init__(min_value=min_value, max_value=max_value,
                         error_messages={**messages, **kwargs.pop("error_messages", {})}, **kwargs)

    def get_value(self, dictionary):
        if dictionary.get(self.field_name) == "":
            return ""  # given but empty: a malformed number, not an absent one
        return super().get_value(dictionary)

    def to_internal_value(self, data):
        if isinstance(data, str) and not (data.isascii() and data.isdigit()):
            self.fail("invalid")
        return super().to_internal_value(data)


class PageQuerySerializer(serializers.Serializer):
    page = WholeNumberField(min_value=1, max_value=MAX_PAGE, default=1, help_text="page number, from 1; past the last page the "
                                                               "results are empty")
    page_size = WholeNumberField(min_value=1, max_value=MAX_PAGE_SIZE, default=PAGE_SIZE,
                                 help_text="items a page")


class RecentQuerySerializer(serializers.Serializer):
    limit = WholeNumberField(min_value=1, max_value=MAX_RECENT_LIMIT, default=RECENT_LIMIT,
                             help_text="how many tuples, newest first")


class StateSerializer(serializers.Serializer):
    state = serializers.CharField(help_text="two-letter code, e.g. BY")
    name = serializers.CharField()
    households = serializers.IntegerField(min_value=0)
    tuples = serializers.IntegerField(min_value=0, help_text="5 s averages stored")
    mean_power_w = serializers.FloatField(help_text="mean household power over all stored windows")
    annual_kwh = serializers.FloatField(help_text="mean_power_w x 8.76")
    annual_cost_eur = serializers.FloatField(help_text="annual_kwh x FOG_PRICE_EUR_PER_KWH")


class HouseholdSerializer(serializers.Serializer):
    household = serializers.CharField()
    state = serializers.CharField()
    postal_code = serializers.CharField()
    power_w = serializers.FloatField(help_text="the latest window's average")
    window_start = serializers.IntegerField(help_text="epoch ms")
    window_end = serializers.IntegerField(help_text="epoch ms")
    edge = serializers.CharField()
    last_seen = serializers.IntegerField(help_text="epoch ms the cloud stored it")


class EdgeSerializer(serializers.Serializer):
    edge = serializers.CharField()
    connected = serializers.BooleanField(help_text="a heartbeat within the last 3 s")
    last_heartbeat = serializers.IntegerField(allow_null=True, help_text="epoch ms")
    backlog = serializers.IntegerField(help_text="tuples not yet acknowledged, as the edge last said")
    paused = serializers.BooleanField(help_text="the edge stopped reading Kafka: its backlog is at its disk budget")
    acked = serializers.IntegerField()
    acked_per_second = serializers.FloatField(help_text="mean over the last 10 s")


class TupleSerializer(serializers.Serializer):
    edge = serializers.CharField()
    id = serializers.IntegerField()
    household = serializers.CharField()
    postal_code = serializers.CharField()
    state = serializers.CharField()
    window_start = serializers.IntegerField()
    window_end = serializers.IntegerField()
    power_w = serializers.FloatField()
    readings = serializers.IntegerField()


class WindowPointSerializer(serializers.Serializer):
    window_start = serializers.IntegerField(help_text="epoch ms")
    window_end = serializers.IntegerField(help_text="epoch ms")
    power_w = serializers.FloatField(help_text="the window's average")


class HouseholdDetailSerializer(HouseholdSerializer):
    series = WindowPointSerializer(many=True, help_text="its windows of the last hour, oldest first")


class PowerPointSerializer(serializers.Serializer):
    minute = serializers.IntegerField(help_text="epoch ms of the minute's start")
    power_w = serializers.FloatField(allow_null=True, help_text="mean total power of all households in that "
                                                                "minute; null when no window reached into it")
    complete = serializers.BooleanField(help_text="false while windows that reach into the minute may still "
                                                  "come in (the current minute, and the last one for a window, "
                                                  "its grace and a few seconds after its end): power_w then "
                                                  "counts only those stored so far")


class OfflinePeriodSerializer(serializers.Serializer):
    start = serializers.IntegerField(help_text="epoch ms of the last heartbeat before the gap")
    end = serializers.IntegerField(allow_null=True, help_text="epoch ms of the first beat after it; null: still offline")


class EdgeHistorySerializer(serializers.Serializer):
    edge = serializers.CharField()
    minutes = serializers.ListField(child=serializers.IntegerField(), help_text="epoch ms of each minute's start")
    backlog = serializers.ListField(child=serializers.IntegerField(allow_null=True),
                                    help_text="backlog at the last beat of each minute; null: no beat")
    acked = serializers.ListField(child=serializers.IntegerField(), help_text="tuples acknowledged in each minute")
    offline = OfflinePeriodSerializer(many=True, help_text="gaps between heartbeats in the last hour, oldest first")


class NotFoundSerializer(serializers.Serializer):
    """A 404: what was asked for and is not there."""

    detail = serializers.CharField()


class RefusedSerializer(serializers.Serializer):
    """A 400 before any parameter is read: what was wrong with the request."""

    detail = serializers.CharField()


class StoreUnavailableSerializer(serializers.Serializer):
    """A 503: the store cannot be reached; the Retry-After header says when to ask again."""

    detail = serializers.CharField()


def error_serializer(query):
    """The 400 a query serializer's errors make: each bad parameter with its messages."""
    fields = {name: serializers.ListField(child=serializers.CharField(), required=False)
              for name in query().fields}
    name = query.__name__.replace("QuerySerializer", "QueryError")
    return type(name, (serializers.Serializer,), {**fields, "__doc__": "Each bad parameter with what was wrong.",
                                                   "__module__": __name__})


PageQueryError = error_serializer(PageQuerySerializer)
RecentQueryError = error_serializer(RecentQuerySerializer)
