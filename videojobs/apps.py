from django.apps import AppConfig


class VideoJobsConfig(AppConfig):
    name = "videojobs"
    verbose_name = "Video jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from videojobs import checks  # noqa: F401  (registers the system checks; needs the app registry ready)
        from videojobs.api import schema  # noqa: F401  (the Bearer keys' OpenAPI scheme; imports DRF settings)
