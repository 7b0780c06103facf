from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from videojobs.api import health, jobs, loras, metrics, videos
from videojobs.api.openai import views as v1
from videojobs.web import views as pages

urlpatterns = [
    path("video/submit", jobs.SubmitView.as_view(), name="video-submit"),
    path("video/status", jobs.StatusView.as_view(), name="video-status"),
    path("video/cancel", jobs.CancelView.as_view(), name="video-cancel"),
    path("video/jobs", jobs.JobListView.as_view(), name="video-jobs"),
    path("video/<str:request_id>", jobs.JobView.as_view(), name="video-job"),
    # The OpenAI-compatible Videos API (the openai SDK with base_url=.../v1), on the same jobs.
    path("v1/videos", v1.VideosView.as_view(), name="v1-videos"),
    path("v1/videos/<str:video_id>", v1.VideoView.as_view(), name="v1-video"),
    path("v1/videos/<str:video_id>/content", v1.VideoContentView.as_view(), name="v1-video-content"),
    path("v1/videos/<str:video_id>/remix", v1.VideoRemixView.as_view(), name="v1-video-remix"),
    path("v1/models", v1.ModelsView.as_view(), name="v1-models"),
    path("v1/models/<path:model_id>", v1.ModelView.as_view(), name="v1-model"),
    path("health", health.HealthView.as_view(), name="health"),
    path("metrics", metrics.MetricsView.as_view(), name="metrics"),
    path("loras", loras.LoraListView.as_view(), name="loras"),
    path("videos/<str:request_id>.mp4", videos.VideoFileView.as_view(), name="video-file"),
    path("docs/schema", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI with its start script as a file of its own (/docs?script), for the Content-Security-Policy.
    path("docs", SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api/swagger_ui.html"),
         name="docs"),
    path("admin/", admin.site.urls),
    # The job page for people (templates/jobs/), same owners and services as the API.
    path("", pages.index, name="page-index"),
    path("jobs/recent", pages.recent, name="page-recent"),
    path("jobs/<str:request_id>", pages.job_detail, name="page-job"),
    path("jobs/<str:request_id>/panel", pages.job_panel, name="page-job-panel"),
    path("jobs/<str:request_id>/cancel", pages.job_cancel, name="page-job-cancel"),
    path("jobs/<str:request_id>/input.png", pages.job_input_image, name="page-job-input"),
    path("accounts/login/", auth_views.LoginView.as_view(next_page="page-index"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="page-index"), name="logout"),
]

handler400 = "videojobs.api.errors.handler400"
handler404 = "videojobs.api.errors.handler404"
handler500 = "videojobs.api.errors.handler500"
