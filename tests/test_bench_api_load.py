"""bench/api_load.py keeps working: a short run answers every row with its expected status
(figures are read from a real run, never asserted here)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.daemon_support import ROOT

pytestmark = pytest.mark.slow


def test_the_api_load_bench_measures_every_endpoint_without_unexpected_answers(tmp_path):
    out = tmp_path / "api_load.json"
    done = subprocess.run([sys.executable, "bench/api_load.py", "--seconds", "1", "--warmup", "0.2", "--clients", "2",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["endpoint"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"bare Django JSON view", "/health", "/video/status", "/video/status (key)", "/video/submit",
                         "/video/submit (key)"}
    for name, row in rows.items():
        assert row["ok"] > 0 and row["unexpected"] == {}, (name, row)
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert "vs bare" in done.stdout
