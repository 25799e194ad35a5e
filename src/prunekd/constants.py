"""Names shared by the core, the stages and the Prefect flow, defined once (and cheap to import:
the flow reads them without loading torch or mlflow)."""

USER_ERROR = 2  # a stage's exit code for a failure a user can fix: bad params or inputs (never retried)
FLOW_RUN_ENV = "PRUNEKD_FLOW_RUN_ID"  # set by the flow for the stages it runs; tagged on their MLflow runs
DVC_ROOT_ENV = "DVC_ROOT"  # set by DVC: the repository an experiment in a temporary copy started from
DVC_EXP_ENV = "DVC_EXP_NAME"  # set by `dvc exp run`: the experiment's name
TRACKING_ENV = "PRUNEKD_TRACKING"  # "off": stages record nothing to MLflow (and never import it)
