"""The README's Python block, saved as a script without a ``__main__`` guard, runs as it is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_block_runs_as_an_unguarded_script(tmp_path):
    text = README.read_text()
    block = re.search(r"## Python API\n\n```python\n(.*?)```", text, re.S).group(1)
    assert "__main__" not in block  # the point: no guard, and the default two worker processes
    script = tmp_path / "readme_example.py"
    script.write_text(block)
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "runs" / "api" / "report.html").exists()
    # printed: the API's groups, whether run() found the same ones, and the planted clusters
    assert " True " in proc.stdout.strip().splitlines()[-1]
