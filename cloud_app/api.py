"""The read-only JSON API over the cloud's Redis (DRF, with an OpenAPI schema).

Every reply goes through the serializers in cloud_app/serializers.py and every query parameter through a
query serializer, so the schema drf-spectacular derives states each bound and each status code, and any
query string gets a 200 or a 400 naming the parameter, never a 500. Each view reads Redis through its
`readers` attribute (a ReaderSource), resolved per request from the settings.
"""

from django.core.paginator import Page
from django.http import JsonResponse
from django.views.defaults import page_not_found
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.generics import GenericAPIView
from rest_framework.views import APIView

from cloud_app.postal import STATE_NAMES
from cloud_app.reader import HouseholdIndex, ReaderSource
from cloud_app.serializers import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    EdgeHistorySerializer,
    EdgeSerializer,
    HouseholdDetailSerializer,
    HouseholdSerializer,
    NotFoundSerializer,
    PageQueryError,
    PageQuerySerializer,
    PowerPointSerializer,
    RecentQueryError,
    RecentQuerySerializer,
    StateSerializer,
    TupleSerializer,
)


class PastTheEnd(Page):
    """A page beyond the last: empty, and its previous page is the last one."""

    def previous_page_number(self):
        return max(1, self.paginator.num_pages)


class HouseholdPagination(PageNumberPagination):
    """DRF's page-number pagination with its parameters validated, not silently replaced: a bad `page` or
    `page_size` is a 400 naming it, and a page past the end is empty (DRF would answer 404)."""

    page_size = PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def paginate_queryset(self, queryset, request, view=None):
        query = PageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        self.request = request
        number, size = query.validated_data["page"], query.validated_data["page_size"]
        paginator = self.django_paginator_class(queryset, size)
        if number > max(1, paginator.num_pages):
            self.page = PastTheEnd([], number, paginator)
        else:
            self.page = paginator.page(number)
        return list(self.page)

    def get_schema_operation_parameters(self, view):
        return []  # stated by PageQuerySerializer in the view's extend_schema


def _bad_query(error):
    return OpenApiResponse(error, description="a query parameter is malformed or out of bounds")


def not_found(request, exception=None):
    """The project's 404: under /api/ the schema's JSON (a path no route matches, e.g. a household id with a
    line break), elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"no such API path: {request.path[:200]!r}"}, status=404)
    return page_not_found(request, exception)


def _not_found(what):
    return OpenApiResponse(NotFoundSerializer, description=f"no such {what}")


class ReadOnlyView(APIView):
    authentication_classes = []  # public figures: no credentials asked, so none can be wrong
    permission_classes = [AllowAny]
    http_method_names = ["get", "head", "options"]
    readers = ReaderSource()


class StatesView(ReadOnlyView):
    @extend_schema(responses=StateSerializer(many=True), summary="Per German state: households, power, energy, cost")
    def get(self, request):
        return Response(StateSerializer(self.readers().states(), many=True).data)


class HouseholdsView(ReadOnlyView, GenericAPIView):
    pagination_class = HouseholdPagination
    serializer_class = HouseholdSerializer

    @extend_schema(parameters=[PageQuerySerializer],
                   responses={200: HouseholdSerializer(many=True), 400: _bad_query(PageQueryError)},
                   summary="Each household's latest window, state and postal code")
    def get(self, request):
        rows = self.paginate_queryset(HouseholdIndex(self.readers()))
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)


class EdgesView(ReadOnlyView):
    @extend_schema(responses=EdgeSerializer(many=True), summary="Edges: link, backlog, acknowledged per second")
    def get(self, request):
        return Response(EdgeSerializer(self.readers().edges(), many=True).data)


class RecentTuplesView(ReadOnlyView):
    @extend_schema(parameters=[RecentQuerySerializer],
                   responses={200: TupleSerializer(many=True), 400: _bad_query(RecentQueryError)},
                   summary="The latest tuples stored, newest first")
    def get(self, request):
        query = RecentQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(TupleSerializer(self.readers().recent(query.validated_data["limit"]), many=True).data)


class HouseholdView(ReadOnlyView):
    @extend_schema(responses={200: HouseholdDetailSerializer, 404: _not_found("household has been stored")},
                   operation_id="household_detail",
                   summary="One household: postal code, state, edge and its last hour of 5 s windows")
    def get(self, request, household):
        row = self.readers().household(household)
        if row is None:
            raise NotFound(f"no household {household[:128]!r} has been stored")
        return Response(HouseholdDetailSerializer(row).data)


class StateHouseholdsView(ReadOnlyView, GenericAPIView):
    pagination_class = HouseholdPagination
    serializer_class = HouseholdSerializer

    @extend_schema(parameters=[PageQuerySerializer],
                   responses={200: HouseholdSerializer(many=True), 400: _bad_query(PageQueryError),
                              404: _not_found("state (two-letter codes such as BY)")},
                   summary="The households of one state, in name order")
    def get(self, request, state):
        if state not in STATE_NAMES:
            raise NotFound(f"no state {state[:8]!r}; states are two-letter codes such as BY")
        rows = self.paginate_queryset(HouseholdIndex(self.readers(), state=state))
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)


class PowerView(ReadOnlyView):
    @extend_schema(responses=PowerPointSerializer(many=True),
                   summary="Total power of all households, minute by minute, over the last hour")
    def get(self, request):
        return Response(PowerPointSerializer(self.readers().power(), many=True).data)


class EdgeHistoryView(ReadOnlyView):
    @extend_schema(responses={200: EdgeHistorySerializer, 404: _not_found("edge has spoken")},
                   summary="One edge's last hour: backlog, acknowledged per minute, offline periods")
    def get(self, request, edge):
        reader = self.readers()
        if edge not in {row["edge"] for row in reader.edges()}:
            raise NotFound(f"no edge {edge[:64]!r} has spoken")
        return Response(EdgeHistorySerializer(reader.edge_history(edge)).data)
