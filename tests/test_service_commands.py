"""What the supervisor starts on a host, and the launcher's refusals (no processes started)."""
from __future__ import annotations

import os
import subprocess

from config.service import child_commands, daemon_command
from tests.daemon_support import ROOT


def test_one_rank_runs_the_daemon_directly(settings):
    settings.INFERENCE_NPROC, settings.INFERENCE_NNODES = 1, 1
    assert daemon_command()[-2:] == [str(settings.BASE_DIR / "manage.py"), "run_inference_daemon"]
    assert "torch.distributed.run" not in daemon_command()


def test_one_host_with_several_ranks_uses_a_standalone_torchrun(settings):
    settings.INFERENCE_NPROC, settings.INFERENCE_NNODES = 8, 1
    command = daemon_command()
    assert command[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=8"]
    assert "--standalone" in command


def test_several_hosts_join_one_rendezvous(settings):
    settings.INFERENCE_NPROC, settings.INFERENCE_NNODES, settings.INFERENCE_NODE_RANK = 8, 2, 1
    settings.MASTER_ADDR, settings.MASTER_PORT = "10.0.0.5", 29511
    command = daemon_command()
    assert "--standalone" not in command
    assert ["--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.5", "--master_port=29511"] == command[4:8]


def test_roles_choose_the_children(settings):
    settings.SERVICE_ROLES = ["inference"]
    assert [child.name for child in child_commands()] == ["inference"]
    settings.SERVICE_ROLES = ["web", "qcluster", "inference"]
    # The qcluster role: the cluster that prepares inputs and the one that delivers webhooks.
    assert [child.name for child in child_commands()] == ["web", "qcluster", "webhooks", "inference"]


def test_start_service_refuses_several_hosts_without_a_shared_database():
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(["bash", "scripts/start_service.sh"], cwd=ROOT, env={**env, "NNODES": "2", "DEVICE": "cpu"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "NNODES=2 needs DATABASE_URL" in result.stderr


def test_start_service_never_kills_by_name():
    script = (ROOT / "scripts" / "start_service.sh").read_text()
    commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not any(word in line for line in commands for word in ("pkill", "killall", "kill -9", "xargs kill"))
