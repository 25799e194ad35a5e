"""check: validate the whole of params.yaml, before any other stage runs.

Each stage depends only on the keys it reads, so a misspelled key (``kd.temprature``) or a key
no stage reads would otherwise change nothing and be silently ignored. This stage depends on
every key, so any edit to params.yaml runs it, and a bad key stops ``dvc repro`` with one line.
So does a key left out (``config.left_out``): every stage refuses one, and this one first.

Every other stage depends on its output (``reports/check.json``), so DVC runs it first, also for
``dvc repro <stage>``: no stage starts on params that did not pass. The file's content is the
same whenever the params are valid, so a valid edit reruns check and nothing else through it.

A few choices are wrong for an architecture, not in themselves: those are tried here on the
untrained architecture (``architecture_fits``), so that they stop the run before the teacher trains
rather than after.
"""

from __future__ import annotations

from ..config import Params, flatten
from ..io import stage_outputs, write_json
from ..paths import Layout
from .cli import run_cli

PASSED = {"params": "valid"}  # constant: a dependency that changes only from missing to present


def architecture_fits(params: Params) -> None:
    """``prune.criterion: bn_scale`` ranks each layer's filters by the BatchNorm after it: the untrained
    architecture is pruned one filter a layer with it, which refuses (in one line) any layer that
    has none. PyTorch is imported only then: every params edit runs this stage."""
    if params.prune.criterion != "bn_scale":
        return
    from ..models import untrained
    from ..prune import prune_to_widths

    model = untrained(params.model, params.data.dataset)
    prune_to_widths(model, [max(1, c - 1) for c in model.channels()], "bn_scale")


def run(params: Params, layout: Layout) -> int:
    keys = flatten(params)
    architecture_fits(params)
    with stage_outputs(layout.checked, root=layout.root) as tmp:
        write_json(tmp / layout.checked.name, PASSED)
    print(f"params: ok ({len(keys)} keys)")
    return len(keys)


def main(argv: list[str] | None = None) -> int:
    # logs nothing: the tracking store is the next stage's to check (run_cli's ``tracked``)
    return run_cli("check", argv, lambda args, params, layout: run(params, layout), doc=__doc__, tracked=False)


if __name__ == "__main__":
    raise SystemExit(main())
