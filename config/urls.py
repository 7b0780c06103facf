from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from videojobs import views
from videojobs.web import views as pages

urlpatterns = [
    path("video/submit", views.SubmitView.as_view(), name="video-submit"),
    path("video/status", views.StatusView.as_view(), name="video-status"),
    path("video/cancel", views.CancelView.as_view(), name="video-cancel"),
    path("video/jobs", views.JobListView.as_view(), name="video-jobs"),
    path("video/<str:request_id>", views.JobView.as_view(), name="video-job"),
    path("health", views.HealthView.as_view(), name="health"),
    path("metrics", views.MetricsView.as_view(), name="metrics"),
    path("videos/<str:request_id>.mp4", views.VideoFileView.as_view(), name="video-file"),
    path("docs/schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
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

handler400 = "videojobs.api_errors.handler400"
handler404 = "videojobs.api_errors.handler404"
handler500 = "videojobs.api_errors.handler500"
