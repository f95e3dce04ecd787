"""Install the example third-party plugin (tests/plugin_example) into the running environment."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PLUGIN_DIR = Path(__file__).parent / "plugin_example"


def ensure_example_plugin() -> None:
    try:
        version("spamgate-example-plugin")
        return
    except PackageNotFoundError:
        pass
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", str(PLUGIN_DIR)],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"pip install of the example plugin failed:\n{r.stdout}\n{r.stderr}")
    importlib.invalidate_caches()
