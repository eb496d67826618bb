"""/metrics in the Prometheus text format: the figures of the side(s) this host serves (FOG_ROLE).

An edge host reads only its database, a cloud host only its Redis; with FOG_ROLE=all both, side by side.
"""

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cloud_app.metrics import CloudCollector
from cloud_app.reader import ReaderSource
from edge_app.metrics import EdgeCollector


readers = ReaderSource()  # this view's Redis dependency; resolved per request from the settings


def metrics(request):
    registry = CollectorRegistry(auto_describe=False)
    if settings.FOG_SERVES_EDGE:
        registry.register(EdgeCollector())
    if settings.FOG_SERVES_CLOUD:
        registry.register(CloudCollector(readers))  # called inside its guard: a cluster client connects as it is made
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
