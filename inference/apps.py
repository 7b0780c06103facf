from django.apps import AppConfig


class InferenceConfig(AppConfig):
    # No models and no torch import here: the web process loads this app too.
    name = "inference"
    verbose_name = "Inference daemon"

    def ready(self) -> None:
        from inference import checks  # noqa: F401  (registering the checks needs the app registry ready)
