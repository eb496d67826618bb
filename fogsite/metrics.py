"""/metrics in the Prometheus text format: the edge's and the cloud's figures side by side."""

from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cloud_app.api import reader
from cloud_app.metrics import CloudCollector
from edge_app.metrics import EdgeCollector


def metrics(request):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgeCollector())
    registry.register(CloudCollector(reader()))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
