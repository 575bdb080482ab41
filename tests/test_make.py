"""The README's two commands where PERPLEX_HOME points elsewhere (new-user issue, point 3)."""

from __future__ import annotations

import os
import subprocess

import pytest

from perplex.core.settings import PROJECT_ROOT


def make(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "PERPLEX_HOME": str(home)}
    env.pop("PERPLEX_MODEL_CACHE", None)
    return subprocess.run(["make", "--no-print-directory", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_make_run_prepares_the_model_under_perplex_home(perplex_home):
    """`make run`'s set-up converts the model where the app will look, and stamps it there."""
    done = make("model", home=perplex_home)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (perplex_home / "models" / ".bundled-ready").is_file()
    assert any((perplex_home / "models").glob("SmolLM2-135M-Instruct*/config.json"))
    again = make("-n", "run", home=perplex_home)  # ready now: only the server is left to start
    assert again.returncode == 0
    assert "perplex.engine.local.prepare" not in again.stdout
    assert "--server.address 127.0.0.1" in again.stdout  # loopback unless ADDRESS= says


def test_make_test_reads_the_projects_models_whatever_perplex_home_says(perplex_home):
    planned = make("-n", "test", home=perplex_home)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "env -u PERPLEX_HOME -u PERPLEX_MODEL_CACHE" in planned.stdout
