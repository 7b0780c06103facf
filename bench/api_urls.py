"""The service's URLs plus /bench/bare (see bench/api_settings.py)."""
from django.http import JsonResponse
from django.urls import path

from config.urls import handler404, handler500, urlpatterns as service_urlpatterns  # noqa: F401


def bare(request):
    # The floor any Django view pays here: WSGI, middleware, routing, a JSON body; no DRF, no query.
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/bare", bare), *service_urlpatterns]
