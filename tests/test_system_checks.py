"""The registered system checks (videojobs.E00x / W00x)."""
from __future__ import annotations

from inference import checks as inference_checks
from videojobs import checks


def ids(messages):
    return [m.id for m in messages]


def test_incomplete_model_dir_is_a_warning_naming_the_missing_parts(settings, tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "vae").mkdir()
    settings.MODEL_CKPT_DIR = str(tmp_path)
    messages = checks.check_model_dir()
    assert ids(messages) == ["videojobs.W003"]
    assert "transformer" in messages[0].msg and "vae," not in messages[0].msg


def test_missing_model_dir_is_a_warning(settings, tmp_path):
    settings.MODEL_CKPT_DIR = str(tmp_path / "nowhere")
    assert ids(checks.check_model_dir()) == ["videojobs.W003"]


def test_unset_model_dir_is_fine(settings):
    settings.MODEL_CKPT_DIR = ""
    assert checks.check_model_dir() == []


def test_lease_shorter_than_the_poll_is_an_error(settings):
    settings.LEASE_SECONDS = 2
    settings.DAEMON_POLL_SECONDS = 2.0
    assert "videojobs.E003" in ids(checks.check_lease_and_timeouts())


def test_development_secret_is_a_deploy_warning(settings):
    settings.SECRET_KEY = settings.INSECURE_DEV_KEY
    assert "videojobs.W001" in ids(checks.check_production_secrets())


def test_output_dir_under_a_file_is_an_error(settings, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    settings.OUTPUT_DIR = tmp_path / "a-file" / "videos"
    assert ids(checks.check_output_dir()) == ["videojobs.E001"]


def test_output_dir_that_can_be_created_is_fine(settings, tmp_path):
    settings.OUTPUT_DIR = tmp_path / "new" / "videos"
    assert checks.check_output_dir() == []


def test_a_topology_that_does_not_fit_the_ranks_is_a_warning_naming_the_fix(settings, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    settings.INFERENCE_NPROC, settings.INFERENCE_NNODES = 4, 1
    settings.ULYSSES_SIZE, settings.RING_SIZE, settings.CFG_SIZE = 8, None, 1
    messages = inference_checks.check_topology()
    assert ids(messages) == ["videojobs.W004"]
    assert "WORLD_SIZE=4" in messages[0].msg and "ULYSSES_SIZE=4 RING_SIZE=1 CFG_SIZE=1" in messages[0].msg


def test_torchruns_world_size_is_the_one_checked(settings, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    settings.INFERENCE_NPROC, settings.ULYSSES_SIZE, settings.RING_SIZE, settings.CFG_SIZE = 1, 4, None, 2
    assert inference_checks.check_topology() == []


def test_exclusive_t5_switches_are_a_warning(settings, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    settings.INFERENCE_NPROC, settings.ULYSSES_SIZE, settings.RING_SIZE, settings.CFG_SIZE = 2, None, None, 1
    settings.T5_CPU, settings.T5_FSDP = True, True
    assert ids(inference_checks.check_topology()) == ["videojobs.W004"]
