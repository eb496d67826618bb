"""The read-only JSON API over the cloud's Redis (DRF, with an OpenAPI schema).

Every reply goes through the serializers in cloud_app/serializers.py and every query parameter through a
query serializer, so the schema drf-spectacular derives states each bound and each status code, and any
query string gets a 200 or a 400 naming the parameter, never a 500. Each view reads Redis through its
`readers` attribute (a ReaderSource), resolved per request from the settings.

While the store is unreachable every view answers a JSON 503 `{"detail": "the store is unavailable: ..."}` with a
Retry-After header, documented on every operation, instead of Django's HTML 500; the log says so once when the
outage begins and once when it ends, not once a request.
"""

import logging
import threading
import time

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.core.paginator import Page
from django.http import JsonResponse
from django.views.defaults import bad_request as django_bad_request
from django.views.defaults import page_not_found
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import APIException, NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.generics import GenericAPIView
from rest_framework.views import APIView

from redis.exceptions import ClusterDownError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
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
    RefusedSerializer,
    StateSerializer,
    StoreUnavailableSerializer,
    TupleSerializer,
)
from fogwire.limits import HOUSEHOLD_ALPHABET, HOUSEHOLD_ID_PATTERN, MAX_HOUSEHOLD_ID, household_problem
from fogwire.ratelog import RateLimitedLog

log = logging.getLogger("fog.cloud")

# A store that restarts is back within seconds; a client retrying sooner only adds load meanwhile.
RETRY_AFTER_SECONDS = 5
# The store can't be reached (down, restarting, loading, a cluster without a quorum, a slot moving): a 503, to be
# asked again. A command the store refuses (WRONGTYPE, a script error) is a fault, and stays a 500.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError, RedisClusterException)
# A store that comes and goes writes two lines a flap: so many, not one a flap.
OUTAGE_LOG_LINES = 6
OUTAGE_LOG_SECONDS = 60.0


class StoreUnavailable(APIException):
    status_code = 503
    default_code = "store_unavailable"
    wait = RETRY_AFTER_SECONDS  # DRF's exception handler makes it the Retry-After header

    def __init__(self, exc):
        super().__init__(f"the store is unavailable: {type(exc).__name__}")  # its address stays in the log


class StoreOutage:
    """Tells the log once that the API's store went away (with why) and once that it is back (how long, how
    many requests met it), however many requests come meanwhile."""

    def __init__(self, clock=time.monotonic):
        self.clock, self.lock, self.since, self.refused = clock, threading.Lock(), None, 0
        self.log = RateLimitedLog(log, OUTAGE_LOG_LINES, OUTAGE_LOG_SECONDS)

    def failed(self, exc):
        with self.lock:
            self.refused += 1
            if self.since is not None:
                return
            self.since = self.clock()
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        self.log.warning("the API's store is unavailable (%s: %s); answering 503 until it is back",
                         type(exc).__name__, reason)

    def answered(self):
        if self.since is None:
            return  # the usual case, without the lock
        with self.lock:
            if self.since is None:
                return
            lasted, refused, self.since, self.refused = self.clock() - self.since, self.refused, None, 0
        self.log.warning("the API's store is back after %.0f s; %d requests were answered 503", lasted, refused)


outage = StoreOutage()


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


def bad_request(request, exception=None):
    """The project's 400 for a request Django refuses before any view (more query parameters than
    DATA_UPLOAD_MAX_NUMBER_FIELDS): under /api/ the schema's JSON, elsewhere Django's page."""
    if request.path.startswith("/api/"):
        detail = (f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} query parameters"
                  if isinstance(exception, TooManyFieldsSent) else f"bad request: {str(exception)[:200]}")
        return JsonResponse({"detail": detail}, status=400)
    return django_bad_request(request, exception)


# What any operation may answer before its view reads a parameter (bad_request).
REFUSED_REQUEST = OpenApiResponse(RefusedSerializer, description="a request refused before it is read: more "
                                  "query parameters than the server reads")


def _not_found(what):
    return OpenApiResponse(NotFoundSerializer, description=f"no such {what}")


RETRY_AFTER = OpenApiParameter("Retry-After", int, OpenApiParameter.HEADER, required=True, response=[503],
                               description="seconds to wait before asking again")
STORE_UNAVAILABLE = OpenApiResponse(StoreUnavailableSerializer,
                                    description="the store (the cloud's Redis) cannot be reached; ask again later")


def reads_the_store(ok, errors=None, parameters=(), **kwargs):
    """extend_schema of a view that reads the store: its 200, its own errors, and the 503 every read of the store
    may answer (each view names its responses, and drf-spectacular takes the method's alone)."""
    return extend_schema(parameters=[*parameters, RETRY_AFTER],
                         responses={200: ok, 400: REFUSED_REQUEST, **(errors or {}), 503: STORE_UNAVAILABLE}, **kwargs)


class ReadOnlyView(APIView):
    authentication_classes = []  # public figures: no credentials asked, so none can be wrong
    permission_classes = [AllowAny]
    http_method_names = ["get", "head", "options"]
    readers = ReaderSource()

    def handle_exception(self, exc):
        if not isinstance(exc, UNAVAILABLE):  # any other Redis error is a fault to mend: a 500 with its traceback
            return super().handle_exception(exc)
        outage.failed(exc)
        response = super().handle_exception(StoreUnavailable(exc))
        response._has_been_logged = True  # Django would log each 5xx as an ERROR line; the outage is told once
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        if response.status_code == 200 and request.method in ("GET", "HEAD"):
            outage.answered()  # every 200 of a GET has read the store
        return super().finalize_response(request, response, *args, **kwargs)


class StatesView(ReadOnlyView):
    @reads_the_store(StateSerializer(many=True), summary="Per German state: households, power, energy, cost")
    def get(self, request):
        return Response(StateSerializer(self.readers().states(), many=True).data)


class HouseholdsView(ReadOnlyView, GenericAPIView):
    pagination_class = HouseholdPagination
    serializer_class = HouseholdSerializer

    @reads_the_store(HouseholdSerializer(many=True), {400: _bad_query(PageQueryError)},
                     parameters=[PageQuerySerializer], summary="Each household's latest window, state and postal code")
    def get(self, request):
        rows = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)

    def get_queryset(self):  # what the page is cut from; the HTML API page asks for it too, after the answer
        return HouseholdIndex(self.readers())


class EdgesView(ReadOnlyView):
    @reads_the_store(EdgeSerializer(many=True), summary="Edges: link, backlog, acknowledged per second")
    def get(self, request):
        return Response(EdgeSerializer(self.readers().edges(), many=True).data)


class RecentTuplesView(ReadOnlyView):
    @reads_the_store(TupleSerializer(many=True), {400: _bad_query(RecentQueryError)},
                     parameters=[RecentQuerySerializer], summary="The latest tuples stored, newest first")
    def get(self, request):
        query = RecentQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(TupleSerializer(self.readers().recent(query.validated_data["limit"]), many=True).data)


# The ids a household may have (fogwire.limits), as the schema's path parameter: any other is no household's, and
# is answered without a read of the store, whatever its length.
HOUSEHOLD_PARAMETER = OpenApiParameter("household", {"type": "string", "pattern": HOUSEHOLD_ID_PATTERN},
                                       OpenApiParameter.PATH, description=f"a household id: 1 to {MAX_HOUSEHOLD_ID} "
                                       f"characters of {HOUSEHOLD_ALPHABET}")


class HouseholdView(ReadOnlyView):
    @reads_the_store(HouseholdDetailSerializer, {404: _not_found("household has been stored")},
                     parameters=[HOUSEHOLD_PARAMETER], operation_id="household_detail",
                     summary="One household: postal code, state, edge and its last hour of 5 s windows")
    def get(self, request, household):
        row = None if household_problem(household) else self.readers().household(household)
        if row is None:
            raise NotFound(f"no household {household[:128]!r} has been stored")
        return Response(HouseholdDetailSerializer(row).data)


class StateHouseholdsView(ReadOnlyView, GenericAPIView):
    pagination_class = HouseholdPagination
    serializer_class = HouseholdSerializer

    @reads_the_store(HouseholdSerializer(many=True),
                     {400: _bad_query(PageQueryError), 404: _not_found("state (two-letter codes such as BY)")},
                     parameters=[PageQuerySerializer], summary="The households of one state, in name order")
    def get(self, request, state):
        if state not in STATE_NAMES:
            raise NotFound(f"no state {state[:8]!r}; states are two-letter codes such as BY")
        rows = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)

    def get_queryset(self):
        return HouseholdIndex(self.readers(), state=self.kwargs["state"])


class PowerView(ReadOnlyView):
    @reads_the_store(PowerPointSerializer(many=True),
                     summary="Total power of all households, minute by minute, over the last hour")
    def get(self, request):
        return Response(PowerPointSerializer(self.readers().power(), many=True).data)


class EdgeHistoryView(ReadOnlyView):
    @reads_the_store(EdgeHistorySerializer, {404: _not_found("edge has spoken")},
                     summary="One edge's last hour: backlog, acknowledged per minute, offline periods")
    def get(self, request, edge):
        reader = self.readers()
        if edge not in {row["edge"] for row in reader.edges()}:
            raise NotFound(f"no edge {edge[:64]!r} has spoken")
        return Response(EdgeHistorySerializer(reader.edge_history(edge)).data)
