"""One module per DVC stage: ``run(...) -> dict of metrics`` plus a few-line ``main()``."""
