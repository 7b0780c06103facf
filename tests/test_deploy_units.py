"""deploy/: the systemd units start exactly what `make run` starts, the environment template
names only variables the service reads and passes `check --deploy`, stopping the daemon's unit
drains its running job, and the nginx example takes a full-size upload."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.core.management import get_commands

from config.service import child_commands, daemon_command, web_command
from inference.daemon.stop import STOP_SIGNAL_DEBOUNCE_SECONDS
from tests.daemon_support import ROOT, database_url_for_tests, job_state, ready_small_job, running, service_env, wait_for
from videojobs.checks import CKPT_PARTS
from videojobs.models import InferenceWorker, JobStatus

DEPLOY = ROOT / "deploy"
INSTALL = "/opt/videogen"
PYTHON = f"{INSTALL}/.venv/bin/python"
ENV_FILE = "/etc/videogen/videogen.env"
SERVICES = ("videogen-web.service", "videogen-qcluster.service", "videogen-webhooks.service",
            "videogen-inference.service")
STRONG_KEY = "x7$Qp!v2@Lm9#Rt4^Wz8&Yb1*Nc6(Hd3)Jf5_Kg0+Se7-Ua2=Io9%Pl4"
STRONG_WEBHOOK_SECRET = "wH7kP2qR9sT4vX8zB3nM6cF1gJ5lD0aE-yU"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each with all its values in order
    (ExecStart= and Environment= repeat); an empty value resets the list, as in a drop-in."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"{path.name}: keep each setting on one line"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def service(name: str) -> dict[str, list[str]]:
    return parse_unit(DEPLOY / name)["Service"]


def unit_environment(name: str) -> dict[str, str]:
    return dict(item.split("=", 1) for entry in service(name).get("Environment", []) for item in shlex.split(entry))


def env_template() -> dict[str, str]:
    """The active KEY=value lines of videogen.env.example."""
    lines = (DEPLOY / "videogen.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def commented_names() -> set[str]:
    text = (DEPLOY / "videogen.env.example").read_text()
    return set(re.findall(r"^#([A-Z][A-Z0-9_]*)=", text, flags=re.M))


def expand(command: str, environ: dict[str, str]) -> list[str]:
    """An Exec line as systemd runs it: words split, each ${VAR} replaced within its word, the
    install directory mapped to this checkout."""
    words = [re.sub(r"\$\{(\w+)\}", lambda m: environ[m.group(1)], word) for word in shlex.split(command)]
    return [word.replace(INSTALL, str(ROOT)) for word in words]


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The template with this machine's secrets, database and folders filled in: what an
    operator edits. Nothing else from this process's environment gets through."""
    ckpt = tmp_path / "ckpt"
    for part in CKPT_PARTS:
        (ckpt / part).mkdir(parents=True, exist_ok=True)
    folders = {name: str(tmp_path / name.lower()) for name in ("VAR_DIR", "OUTPUT_DIR", "MEDIA_ROOT", "STATIC_ROOT")}
    return {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path),
        **env_template(), **folders,
        "SECRET_KEY": STRONG_KEY, "WEBHOOK_SECRET": STRONG_WEBHOOK_SECRET, "MODEL_CKPT_DIR": str(ckpt),
        "DATABASE_URL": database_url_for_tests(),
        **extra,
    }


# --- the units --------------------------------------------------------------------------

@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_as_the_service_user_from_the_install_dir_after_the_network_and_postgres(name):
    unit = parse_unit(DEPLOY / name)
    assert unit["Service"]["User"] == ["videogen"] and unit["Service"]["Group"] == ["videogen"]
    assert unit["Service"]["WorkingDirectory"] == [INSTALL]
    assert unit["Service"]["EnvironmentFile"] == [ENV_FILE]
    assert {"network-online.target", "postgresql.service"} <= set(" ".join(unit["Unit"]["After"]).split())
    assert unit["Unit"]["PartOf"] == ["videogen.target"]
    # Every command runs the install's virtualenv.
    for key in ("ExecStartPre", "ExecStart"):
        assert all(command.startswith(PYTHON + " ") for command in unit["Service"].get(key, [])), (name, key)


def test_the_target_starts_every_service_and_the_readme_installs_the_template_where_the_units_read_it():
    target = parse_unit(DEPLOY / "videogen.target")
    assert set(" ".join(target["Unit"]["Wants"]).split()) == set(SERVICES)
    readme = (ROOT / "README.md").read_text()
    assert f"deploy/videogen.env.example {ENV_FILE}" in readme


def test_web_unit_starts_gunicorn_exactly_as_make_run_does():
    environ = env_template()
    (command,) = service("videogen-web.service")["ExecStart"]
    argv = expand(command, environ)
    expected = web_command(host=environ["SERVER_HOST"], port=int(environ["SERVER_PORT"]), workers=int(environ["WEB_WORKERS"]))
    assert argv[1:] == expected[1:]
    # The WSGI application gunicorn is pointed at exists.
    module, _, attribute = argv[argv.index("gunicorn") + 1].partition(":")
    assert callable(getattr(__import__(module, fromlist=[attribute]), attribute))
    web = service("videogen-web.service")
    assert web["Restart"] == ["always"] and web["Type"] == ["notify"]


def test_qcluster_unit_starts_the_cluster_exactly_as_make_run_does():
    (command,) = service("videogen-qcluster.service")["ExecStart"]
    assert expand(command, env_template())[1:] == [str(ROOT / "manage.py"), "qcluster"]
    assert service("videogen-qcluster.service")["Restart"] == ["always"]


@pytest.mark.parametrize("unit, child", [("videogen-qcluster.service", "qcluster"),
                                         ("videogen-webhooks.service", "webhooks")])
def test_each_django_q_unit_runs_the_cluster_make_run_runs_under_the_same_name(settings, unit, child):
    settings.SERVICE_ROLES = ["qcluster"]
    (started,) = [c for c in child_commands() if c.name == child]
    (command,) = service(unit)["ExecStart"]
    assert expand(command, env_template())[1:] == started.argv[1:]
    # The cluster's name (Q_CLUSTER_NAME; none: the default cluster) is the supervisor's; systemd
    # lets the EnvironmentFile override Environment=.
    environment = {**unit_environment(unit), **env_template()}
    assert environment.get("Q_CLUSTER_NAME") == started.env.get("Q_CLUSTER_NAME")
    assert service(unit)["Restart"] == ["always"] and service(unit)["KillMode"] == ["mixed"]


def test_stopping_the_webhooks_unit_waits_for_a_delivery_in_flight(settings):
    delivery = settings.Q_CLUSTER["ALT_CLUSTERS"][settings.WEBHOOK_CLUSTER]["timeout"]
    assert int(service("videogen-webhooks.service")["TimeoutStopSec"][0]) > delivery


def test_inference_unit_starts_torchrun_exactly_as_make_run_does_on_one_host(settings):
    environ = env_template()
    settings.INFERENCE_NPROC, settings.INFERENCE_NNODES = int(environ["INFERENCE_NPROC"]), 1
    (command,) = service("videogen-inference.service")["ExecStart"]
    assert expand(command, environ)[1:] == daemon_command()[1:]


def test_multihost_drop_in_starts_torchrun_exactly_as_make_run_does_across_hosts(settings):
    environ = {**env_template(), "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29511"}
    settings.INFERENCE_NPROC, settings.INFERENCE_NNODES, settings.INFERENCE_NODE_RANK = int(environ["INFERENCE_NPROC"]), 2, 1
    settings.MASTER_ADDR, settings.MASTER_PORT = "10.0.0.1", 29511
    (command,) = parse_unit(DEPLOY / "videogen-inference-multihost.conf")["Service"]["ExecStart"]
    assert expand(command, environ)[1:] == daemon_command()[1:]


def test_every_manage_command_a_unit_runs_exists():
    commands = get_commands()
    files = [DEPLOY / name for name in SERVICES] + [DEPLOY / "videogen-inference-multihost.conf"]
    named = []
    for path in files:
        unit = parse_unit(path)["Service"]
        for command in unit.get("ExecStartPre", []) + unit.get("ExecStart", []):
            words = shlex.split(command)
            if f"{INSTALL}/manage.py" in words:
                named.append(words[words.index(f"{INSTALL}/manage.py") + 1])
    assert sorted(set(named)) == ["prepare_service", "qcluster", "run_inference_daemon"]
    assert all(name in commands for name in named), [n for n in named if n not in commands]


def test_every_variable_a_unit_expands_is_set_in_the_env_template():
    # An unset one would expand to nothing (gunicorn --bind :8088, torchrun --nproc_per_node=).
    files = [DEPLOY / name for name in SERVICES] + [DEPLOY / "videogen-inference-multihost.conf"]
    used = set()
    for path in files:
        for key, values in parse_unit(path)["Service"].items():
            if key.startswith("Exec"):
                used |= {name for value in values for name in re.findall(r"\$\{(\w+)\}", value)}
    template = env_template()
    assert used and not [name for name in used if not template.get(name)], used


def test_stopping_the_inference_unit_waits_for_the_running_job():
    daemon = service("videogen-inference.service")
    # SIGTERM to every process of the unit, the ranks included (rank 0 takes the copy torchrun
    # passes on as the same stop), SIGKILL to whatever is left after TimeoutStopSec.
    assert daemon["KillMode"] == ["control-group"] and daemon["KillSignal"] == ["SIGTERM"]
    torchrun_wait = int(unit_environment("videogen-inference.service")["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"])
    # The longest job: TASK_TIMEOUT, or scripts/start_service.sh's 2400 s in T5-CPU mode.
    assert torchrun_wait >= max(int(env_template()["TASK_TIMEOUT"]), 2400) + 60
    assert int(daemon["TimeoutStopSec"][0]) > torchrun_wait
    # torchrun exits 1 after a stop and after a crash: restarted either way unless stopped.
    assert daemon["SuccessExitStatus"] == ["1"] and daemon["Restart"] == ["always"]


def test_units_pass_systemd_analyze_verify_where_it_is_installed(tmp_path):
    # The parsing above runs everywhere; systemd's own check runs where systemd is installed.
    for name in SERVICES + ("videogen.target",):
        text = (DEPLOY / name).read_text().replace(INSTALL, str(ROOT))
        (tmp_path / name).write_text(text)
    drop_in = tmp_path / "videogen-inference.service.d" / "multihost.conf"
    drop_in.parent.mkdir()
    drop_in.write_text((DEPLOY / "videogen-inference-multihost.conf").read_text().replace(INSTALL, str(ROOT)))
    assert (tmp_path / "videogen-web.service").read_text().count(str(ROOT)) >= 3
    if shutil.which("systemd-analyze"):
        result = subprocess.run(["systemd-analyze", "verify", "--man=no", *[f"./{n}" for n in SERVICES], "./videogen.target"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result.stderr


# --- the environment template -----------------------------------------------------------

def settings_reads(environ: dict[str, str]) -> set[str]:
    """The variables config/settings.py reads (through config.env) under ``environ``."""
    code = (
        "import json, config.env as e; seen = set(); raw = e.raw\n"
        "e.raw = lambda name: seen.add(name) or raw(name)\n"
        "import config.settings; print(json.dumps(sorted(seen)))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_env_template_names_only_variables_the_service_reads(tmp_path):
    read = settings_reads(production_env(tmp_path))
    template = env_template()
    assert not set(template) - read, f"not read by config/settings.py: {set(template) - read}"
    # The commented ones too, except the Ascend runtime's, which scripts/start_service.sh sets.
    launcher = set(re.findall(r"^\s*export ([A-Z][A-Z0-9_]*)=", (ROOT / "scripts/start_service.sh").read_text(), flags=re.M))
    assert not commented_names() - read - launcher, commented_names() - read - launcher
    assert template["DJANGO_ENV"] == "production" and template["LOG_FORMAT"] == "json"


@pytest.mark.django_db
def test_env_template_with_its_secrets_filled_in_passes_check_deploy(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=production_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_env_template_left_unedited_refuses_to_start(tmp_path):
    environ = {**production_env(tmp_path), "SECRET_KEY": env_template()["SECRET_KEY"]}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=environ, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


# --- the reverse proxy ------------------------------------------------------------------

def nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def test_nginx_example_proxies_to_the_web_bind_with_the_forwarded_scheme_and_fits_an_upload():
    conf = (DEPLOY / "nginx-videogen.conf").read_text()
    environ = env_template()
    directives = [line.split("#")[0].strip() for line in conf.splitlines() if line.split("#")[0].strip()]
    assert f"server {environ['SERVER_HOST']}:{environ['SERVER_PORT']};" in directives
    assert "proxy_pass http://videogen_web;" in directives
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in directives
    assert "proxy_set_header Host $host;" in directives
    (size,) = re.findall(r"^client_max_body_size (\S+);$", "\n".join(directives), flags=re.M)
    largest = getattr(settings, "MAX_UPLOAD_REQUEST_BYTES", settings.IMAGE_MAX_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    assert nginx_size(size) >= largest


# --- the daemon's unit, run for real ----------------------------------------------------

@pytest.fixture
def unit_daemon(settings, tiny_ckpt):  # noqa: F811
    """The inference unit's command and environment, with two CPU ranks, and a ready job."""
    settings.MAX_CONCURRENT_TASKS = 50
    environ = service_env(tiny_ckpt, **unit_environment("videogen-inference.service"), INFERENCE_NPROC=2)
    (command,) = service("videogen-inference.service")["ExecStart"]

    def ready_job(infer_steps: int):
        return ready_small_job(num_frames=49, infer_steps=infer_steps)

    return ready_job, expand(command, environ), environ


def running_at_step_2(job_pk: int, log: Path) -> None:
    state = wait_for(lambda: (lambda j: j if j.progress_step >= 2 or j.finished_at else None)(job_state(job_pk)),
                     timeout=240, what="step 2", log=log)
    assert state.status == JobStatus.IN_PROGRESS, f"{state.status} {state.reason}"


def stop_as_systemd(process: subprocess.Popen, log: Path, *, answers: list[str]) -> int:
    """The unit's stop as systemd delivers it, once per expected answer of rank 0
    (``systemctl stop``, then ``systemctl kill --kill-whom=main``): KillSignal to the main
    process (torchrun) only under KillMode=mixed, to every process under control-group. No
    rank may outlive torchrun."""
    unit = service("videogen-inference.service")
    ranks = [p for p in psutil.Process(process.pid).children(recursive=True) if "run_inference_daemon" in " ".join(p.cmdline())]
    assert len(ranks) == 2
    first = [process.pid] + ([r.pid for r in ranks] if unit["KillMode"] == ["control-group"] else [])
    for number, answer in enumerate(answers):
        if number:
            # An operator's second signal comes later than the copies of one stop.
            time.sleep(STOP_SIGNAL_DEBOUNCE_SECONDS + 0.5)
        for pid in first if number == 0 else [process.pid]:
            os.kill(pid, getattr(signal, unit["KillSignal"][0]))
        wait_for(lambda: answer in log.read_text(errors="replace"), timeout=30, what=answer, log=log)
    code = process.wait(timeout=300)
    _, left = psutil.wait_procs(ranks, timeout=10)
    assert not left, "a rank outlived torchrun"
    return code


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_stopping_the_inference_unit_finishes_the_running_job_on_every_rank(unit_daemon, tmp_path):
    ready_job, argv, environ = unit_daemon
    job = ready_job(infer_steps=30)
    log = tmp_path / "daemon.log"
    with running(argv, environ, log) as daemon:
        running_at_step_2(job.pk, log)
        code = stop_as_systemd(daemon, log, answers=["finishing the current job"])
    assert job_state(job.pk).status == JobStatus.SUCCEED, log.read_text()[-3000:]
    assert str(code) in ["0", *service("videogen-inference.service")["SuccessExitStatus"]]
    assert InferenceWorker.objects.get().state == "stopped"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_signalling_torchrun_again_gives_the_running_job_back(unit_daemon, settings, tmp_path):
    ready_job, argv, environ = unit_daemon
    job = ready_job(infer_steps=100)
    log = tmp_path / "daemon.log"
    with running(argv, environ, log) as daemon:
        running_at_step_2(job.pk, log)
        stop_as_systemd(daemon, log, answers=["finishing the current job", "giving the current job back"])
    back = job_state(job.pk)
    assert back.status == JobStatus.IN_QUEUE, log.read_text()[-3000:]
    # The interrupted attempt is not charged.
    assert back.max_attempts - back.attempt == settings.JOB_MAX_ATTEMPTS
