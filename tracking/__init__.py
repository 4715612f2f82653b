"""Everything MLflow: run hierarchy, the training logger, artifacts, reading runs back, `main`."""

import os

# No usage reporting from this machine (it has no internet, and a research tool should not phone home).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# MLflow's own retries of every request to a tracking server, set explicitly because the
# many-machines path relies on them (a server restarted mid-study, tests/test_reliability_faults.py).
# urllib3 waits 0, 2, 4, 8, ... s (factor 1, doubling, each at most 120 s, plus up to 1 s jitter)
# between tries: 10 retries (MLflow's maximum) span about 8 minutes of outage before a request
# fails; each try waits at most 120 s for an answer. The environment overrides them.
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
}
for _name, _value in HTTP_RETRIES.items():
    os.environ.setdefault(_name, _value)
