"""check: validate the whole of params.yaml.

Each stage depends only on the keys it reads, so a misspelled key (``kd.temprature``) or a key
no stage reads would otherwise change nothing and be silently ignored. This stage depends on
every key, so any edit to params.yaml runs it, and a bad key stops ``dvc repro`` with one line.
"""

from __future__ import annotations

from ..config import Params, flatten
from .cli import run_cli


def run(params: Params) -> int:
    keys = flatten(params)
    print(f"params: ok ({len(keys)} keys)")
    return len(keys)


def main(argv: list[str] | None = None) -> int:
    return run_cli("check", argv, lambda args, params, layout: run(params), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
