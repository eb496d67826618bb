from django.conf import settings
from django.shortcuts import render


def dashboard(request):
    return render(request, "dashboard.html", {"price": settings.FOG_PRICE_EUR_PER_KWH})
