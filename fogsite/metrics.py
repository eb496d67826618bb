"""/metrics in the Prometheus text format: the edge's and the cloud's figures side by side."""

from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cloud_app.metrics import CloudCollector
from cloud_app.reader import ReaderSource
from edge_app.metrics import EdgeCollector


readers = ReaderSource()  # this view's Redis dependency; resolved per request from the settings


def metrics(request):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgeCollector())
    registry.register(CloudCollector(readers()))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
