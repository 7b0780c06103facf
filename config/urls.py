from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from videojobs import views

urlpatterns = [
    path("video/submit", views.SubmitView.as_view(), name="video-submit"),
    path("video/status", views.StatusView.as_view(), name="video-status"),
    path("video/cancel", views.CancelView.as_view(), name="video-cancel"),
    path("health", views.HealthView.as_view(), name="health"),
    path("metrics", views.MetricsView.as_view(), name="metrics"),
    path("videos/<str:request_id>.mp4", views.VideoFileView.as_view(), name="video-file"),
    path("docs/schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/", admin.site.urls),
]

handler400 = "videojobs.api_errors.handler400"
handler404 = "videojobs.api_errors.handler404"
handler500 = "videojobs.api_errors.handler500"
