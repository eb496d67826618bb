from django.conf import settings
from django.shortcuts import render

from cloud_app.consumers import ALIVE_EVERY_SECONDS
from cloud_app.reader import power_settled_ms
from cloud_app.server import TICK_EVERY_SECONDS
from fogwire.limits import HOUSEHOLD_ID_PATTERN


def dashboard(request):
    return render(request, "dashboard.html", {"price": settings.FOG_PRICE_EUR_PER_KWH,
                                              "power_settled_ms": power_settled_ms(),
                                              "cloud_tick_ms": int(TICK_EVERY_SECONDS * 1000),
                                              "socket_alive_ms": int(ALIVE_EVERY_SECONDS * 1000),
                                              "household_id": HOUSEHOLD_ID_PATTERN})
