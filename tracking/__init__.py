"""Everything MLflow: run hierarchy, the training logger, artifacts, reading runs back, `main`."""

import os

# No usage reporting from this machine (it has no internet, and a research tool should not phone home).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
