"""Where the project and the local stack's state live."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The directory holding template.yaml: $ROTATOR_PROJECT_ROOT, the nearest one above the working directory, or the
    source checkout this package was installed from (editable install)."""
    if os.environ.get("ROTATOR_PROJECT_ROOT"):
        return Path(os.environ["ROTATOR_PROJECT_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "template.yaml").is_file() and (candidate / "statemachines").is_dir():
            return candidate
    source_checkout = Path(__file__).resolve().parents[2]
    if (source_checkout / "template.yaml").is_file():
        return source_checkout
    raise FileNotFoundError("template.yaml not found: run from the rotator checkout or set ROTATOR_PROJECT_ROOT")


def local_home() -> Path:
    """State of `rotator local up`: $ROTATOR_HOME or <project>/.rotator/local."""
    if os.environ.get("ROTATOR_HOME"):
        return Path(os.environ["ROTATOR_HOME"]).resolve()
    return project_root() / ".rotator" / "local"
