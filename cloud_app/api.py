"""The read-only JSON API over the cloud's Redis (DRF, with an OpenAPI schema)."""

from functools import lru_cache

import redis
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from cloud_app.postal import STATE_NAMES
from cloud_app.reader import CloudReader

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Redis ranges take 64-bit offsets; 10^9 pages of 500 stay far inside them, and far beyond any real page.
MAX_PAGE = 1_000_000_000
MAX_NUMBER_TEXT = 20  # digits of a query number read at all: int() of a longer text costs time for nothing


@lru_cache(maxsize=1)
def reader():
    client = redis.Redis.from_url(settings.FOG_CLOUD_REDIS_URL, socket_timeout=5)
    return CloudReader(client, settings.FOG_CLOUD_KEY_PREFIX, settings.FOG_PRICE_EUR_PER_KWH)


class StateSerializer(serializers.Serializer):
    state = serializers.CharField(help_text="two-letter code, e.g. BY")
    name = serializers.CharField()
    households = serializers.IntegerField()
    tuples = serializers.IntegerField(help_text="5 s averages stored")
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


def _page(results, count, request, page, size):
    base = request.build_absolute_uri(request.path)
    last = (count + size - 1) // size
    return {"count": count, "page": page, "page_size": size,
            "next": f"{base}?page={page + 1}&page_size={size}" if page < last else None,
            "previous": f"{base}?page={page - 1}&page_size={size}" if page > 1 else None,
            "results": results}


def _envelope(serializer):
    return inline_serializer(f"Paginated{serializer.__name__.replace('Serializer', '')}", fields={
        "count": serializers.IntegerField(), "page": serializers.IntegerField(),
        "page_size": serializers.IntegerField(), "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True), "results": serializer(many=True)})


def _positive(request, name, default, maximum):
    """A whole number 1..maximum from the query string, or a 400 that names the parameter."""
    raw = request.query_params.get(name, default)
    try:
        value = int(raw) if len(str(raw)) <= MAX_NUMBER_TEXT else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise ValidationError({name: f"expected a whole number, got {str(raw)[:MAX_NUMBER_TEXT]!r}"})
    if not 1 <= value <= maximum:
        raise ValidationError({name: f"expected 1..{maximum}, got {str(raw)[:MAX_NUMBER_TEXT]}"})
    return value


HOUSEHOLD_PAGE = _envelope(HouseholdSerializer)
PAGING = [OpenApiParameter("page", int, description=f"page number, 1..{MAX_PAGE}"),
          OpenApiParameter("page_size", int, description=f"items a page (default {PAGE_SIZE}, at most {MAX_PAGE_SIZE})")]


class ReadOnlyView(APIView):
    permission_classes = [AllowAny]
    http_method_names = ["get", "head", "options"]


class StatesView(ReadOnlyView):
    @extend_schema(responses=_envelope(StateSerializer), summary="Per German state: households, power, energy, cost")
    def get(self, request):
        rows = reader().states()
        return Response(_page(rows, len(rows), request, 1, len(rows)))


class HouseholdsView(ReadOnlyView):
    @extend_schema(parameters=PAGING, responses=HOUSEHOLD_PAGE,
                   summary="Each household's latest window, state and postal code")
    def get(self, request):
        page = _positive(request, "page", 1, MAX_PAGE)
        size = _positive(request, "page_size", PAGE_SIZE, MAX_PAGE_SIZE)
        count, rows = reader().households((page - 1) * size, size)
        return Response(_page(rows, count, request, page, size))


class EdgesView(ReadOnlyView):
    @extend_schema(responses=EdgeSerializer(many=True), summary="Edges: link, backlog, acknowledged per second")
    def get(self, request):
        return Response(reader().edges())


class RecentTuplesView(ReadOnlyView):
    @extend_schema(parameters=[OpenApiParameter("limit", int, description="at most 200 (default 50)")],
                   responses=TupleSerializer(many=True), summary="The latest tuples stored, newest first")
    def get(self, request):
        return Response(reader().recent(_positive(request, "limit", 50, 200)))


class WindowPointSerializer(serializers.Serializer):
    window_start = serializers.IntegerField(help_text="epoch ms")
    window_end = serializers.IntegerField(help_text="epoch ms")
    power_w = serializers.FloatField(help_text="the window's average")


class HouseholdDetailSerializer(HouseholdSerializer):
    series = WindowPointSerializer(many=True, help_text="its windows of the last hour, oldest first")


class PowerPointSerializer(serializers.Serializer):
    minute = serializers.IntegerField(help_text="epoch ms of the minute's start")
    power_w = serializers.FloatField(allow_null=True, help_text="mean total power of all households in that "
                                                                "minute; null when no window started in it")


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


class HouseholdView(ReadOnlyView):
    @extend_schema(responses={200: HouseholdDetailSerializer, 404: None}, operation_id="household_detail",
                   summary="One household: postal code, state, edge and its last hour of 5 s windows")
    def get(self, request, household):
        row = reader().household(household)
        if row is None:
            raise NotFound(f"no household {household[:128]!r} has been stored")
        return Response(row)


class StateHouseholdsView(ReadOnlyView):
    @extend_schema(parameters=PAGING, responses={200: HOUSEHOLD_PAGE, 404: None},
                   summary="The households of one state, in name order")
    def get(self, request, state):
        if state not in STATE_NAMES:
            raise NotFound(f"no state {state[:8]!r}; states are two-letter codes such as BY")
        page = _positive(request, "page", 1, MAX_PAGE)
        size = _positive(request, "page_size", PAGE_SIZE, MAX_PAGE_SIZE)
        count, rows = reader().households((page - 1) * size, size, state=state)
        return Response(_page(rows, count, request, page, size))


class PowerView(ReadOnlyView):
    @extend_schema(responses=PowerPointSerializer(many=True),
                   summary="Total power of all households, minute by minute, over the last hour")
    def get(self, request):
        return Response(reader().power())


class EdgeHistoryView(ReadOnlyView):
    @extend_schema(responses={200: EdgeHistorySerializer, 404: None},
                   summary="One edge's last hour: backlog, acknowledged per minute, offline periods")
    def get(self, request, edge):
        if edge not in {row["edge"] for row in reader().edges()}:
            raise NotFound(f"no edge {edge[:64]!r} has spoken")
        return Response(reader().edge_history(edge))
