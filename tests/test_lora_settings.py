"""LORA_DIR and DEFAULT_LORAS: parsing, the ImproperlyConfigured naming the variable, the system check."""
from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import env
from videojobs import checks
from videojobs.params import parse_lora_list


def test_default_loras_parse_names_and_scales(monkeypatch) -> None:
    monkeypatch.setenv("DEFAULT_LORAS", "wan2.1_i2v_lora_rank64_lightx2v_4step:1, style-v2:-0.5,plain")
    assert env.loras("DEFAULT_LORAS") == [
        {"name": "wan2.1_i2v_lora_rank64_lightx2v_4step", "scale": 1.0}, {"name": "style-v2", "scale": -0.5},
        {"name": "plain", "scale": 1.0},
    ]


def test_unset_default_loras_is_none(monkeypatch) -> None:
    monkeypatch.delenv("DEFAULT_LORAS", raising=False)
    assert env.loras("DEFAULT_LORAS") == []


@pytest.mark.parametrize("value, says", [
    ("style:3", "must be in [-2.0, 2.0]"), ("style:strong", "bad scale"), ("../x:1", "bad LoRA name"),
    ("a,a", "named twice"), ("a,b,c,d,e", "at most 4"), ("style:nan", "must be in"),
])
def test_a_bad_default_loras_names_the_variable(monkeypatch, value, says) -> None:
    monkeypatch.setenv("DEFAULT_LORAS", value)
    with pytest.raises(ImproperlyConfigured, match=f"DEFAULT_LORAS: .*{says.replace('[', '.').replace(']', '.')}"):
        env.loras("DEFAULT_LORAS")


def test_parse_lora_list_refuses_what_the_api_refuses() -> None:
    with pytest.raises(ValueError, match="at most 4"):
        parse_lora_list("a,b,c,d,e")


def test_lora_dir_that_is_a_file_is_an_error(settings, tmp_path) -> None:
    settings.LORA_DIR = tmp_path / "file"
    settings.LORA_DIR.write_text("x")
    assert [m.id for m in checks.check_loras()] == ["videojobs.E017"]


def test_a_default_lora_missing_from_lora_dir_is_a_warning(settings, tmp_path) -> None:
    settings.LORA_DIR = tmp_path
    settings.DEFAULT_LORAS = [{"name": "distill", "scale": 1.0}]
    assert [m.id for m in checks.check_loras()] == ["videojobs.W017"]
    (tmp_path / "distill.safetensors").write_bytes(b"")
    assert checks.check_loras() == []
