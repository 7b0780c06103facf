from django.apps import AppConfig


class VideoJobsConfig(AppConfig):
    name = "videojobs"
    verbose_name = "Video jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from videojobs import checks  # noqa: F401  (registers the system checks)
        from videojobs import schema  # noqa: F401  (the OpenAPI description of the Bearer keys)
