"""GET /loras: the LoRA adapters the inference workers hold, for a client to choose from."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from videojobs import params as P
from videojobs.api.health import is_operator
from videojobs.selectors.loras import lora_catalog


class LoraSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="the file stem in LORA_DIR: what a job's loras[].name says")
    format = serializers.CharField(help_text="the file's key format: wan (LightX2V / original Wan), peft or kohya")
    rank = serializers.IntegerField(help_text="the largest rank among its modules")
    size_bytes = serializers.IntegerField(help_text="the file's size")
    sha256 = serializers.CharField(help_text="the first 12 hex characters of the file's sha256")
    memory_bytes = serializers.IntegerField(help_text="device memory it costs each rank of a worker")
    workers = serializers.ListField(child=serializers.CharField(), help_text="the workers that hold it")


class LoraListSerializer(serializers.Serializer):
    loras = LoraSerializer(many=True)
    max_per_job = serializers.IntegerField()
    scale_range = serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2)


class LoraListView(APIView):
    @extend_schema(responses={200: LoraListSerializer}, summary="The LoRA adapters the inference workers hold")
    def get(self, request: Request) -> Response:
        return Response({"loras": lora_catalog(private=is_operator(request)), "max_per_job": P.LORAS_MAX,
                         "scale_range": [P.LORA_SCALE_MIN, P.LORA_SCALE_MAX]})
