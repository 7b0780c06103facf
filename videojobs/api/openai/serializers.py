"""/v1's query, request and response shapes (validation and the OpenAPI schema); the mapping of
a create onto /video/submit is in mapping.py."""
from __future__ import annotations

from rest_framework import serializers

from videojobs import params as P
from videojobs.api.serializers import StrictCharField

LIST_LIMIT_MAX = 100


class VideoListQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(default=20, min_value=1, max_value=LIST_LIMIT_MAX)
    after = serializers.CharField(required=False, max_length=64, help_text="the id of the last video of the previous page")
    order = serializers.ChoiceField(choices=("asc", "desc"), default="desc")


class VideoContentQuerySerializer(serializers.Serializer):
    variant = serializers.ChoiceField(choices=("video", "thumbnail", "spritesheet"), default="video")


class VideoRemixSerializer(serializers.Serializer):
    prompt = StrictCharField(min_length=P.PROMPT_MIN_CHARS, max_length=P.PROMPT_MAX_CHARS)


class VideoCreateFormSerializer(serializers.Serializer):
    """multipart/form-data, as the openai SDK sends it; /video/submit's other fields may follow."""

    prompt = serializers.CharField()
    input_reference = serializers.FileField(help_text="the first frame: a JPEG, PNG, WebP, GIF or BMP file")
    model = serializers.CharField(required=False, help_text="GET /v1/models: the served model's id (the default)")
    seconds = serializers.CharField(required=False, help_text="e.g. \"4\": frames at 16 fps, the nearest 4k+1 count "
                                                              "in 25..117 (the response says the seconds made)")
    size = serializers.CharField(required=False, help_text="WIDTHxHEIGHT: 1280x720 (default), 720x1280, 832x480, "
                                                           "480x832, and EXTRA_IMAGE_SIZES")


class ImageReferenceSerializer(serializers.Serializer):
    image_url = serializers.CharField(help_text="an http(s) URL the server fetches, or a base64 data: URL")


class VideoCreateJSONSerializer(VideoCreateFormSerializer):
    input_reference = ImageReferenceSerializer()


class VideoErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class VideoSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="video_<requestId>; /video/status takes it too")
    object = serializers.CharField(help_text='always "video"')
    status = serializers.ChoiceField(choices=("queued", "in_progress", "completed", "failed"))
    progress = serializers.IntegerField(min_value=0, max_value=100)
    created_at = serializers.IntegerField()
    completed_at = serializers.IntegerField(allow_null=True)
    expires_at = serializers.IntegerField(allow_null=True)
    model = serializers.CharField()
    prompt = serializers.CharField()
    seconds = serializers.CharField()
    size = serializers.CharField()
    error = VideoErrorSerializer(allow_null=True)
    remixed_from_video_id = serializers.CharField(allow_null=True)


class VideoListSerializer(serializers.Serializer):
    object = serializers.CharField(help_text='always "list"')
    data = VideoSerializer(many=True)
    first_id = serializers.CharField(allow_null=True)
    last_id = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


class VideoDeletedSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(help_text='always "video.deleted"')
    deleted = serializers.BooleanField()


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(help_text='always "model"')
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


class ModelListSerializer(serializers.Serializer):
    object = serializers.CharField(help_text='always "list"')
    data = ModelSerializer(many=True)


class OpenAIErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField()


class OpenAIErrorSerializer(serializers.Serializer):
    error = OpenAIErrorDetailSerializer()
