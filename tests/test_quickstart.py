"""The Assistants quickstart (../shared/examples/quickstart.py) runs verbatim against assistantd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[2] / "shared" / "examples" / "quickstart.py"


@pytest.mark.skipif(not QUICKSTART.exists(), reason="../shared/examples/quickstart.py is not laid out")
def test_quickstart_runs_verbatim(server, client):
    env = {**os.environ, "ASSISTANTD_URL": server.base_url, "OPENAI_API_KEY": "sk-local",
           "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(QUICKSTART)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # The fake model first calls code_interpreter (the quickstart prints the tool call and the
    # code as it streams), then answers with what the tool returned.
    assert "assistant > code_interpreter" in out
    assert "x = (14 - 11) / 3" in out
    # The code really ran in the Docker sandbox: the handler printed its output, and the model
    # was told what it printed.
    assert "output >" in out
    assert "\n1.0\n" in out
    assert "assistant > The tool returned: 1.0" in out
    # The run the quickstart streamed ended completed, and its answer is the thread's last message.
    threads_runs = [line for line in out.splitlines() if line.startswith("assistant > The tool returned:")]
    assert len(threads_runs) == 1
