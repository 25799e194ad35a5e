"""check: validate the whole of params.yaml, before any other stage runs.

Each stage depends only on the keys it reads, so a misspelled key (``kd.temprature``) or a key
no stage reads would otherwise change nothing and be silently ignored. This stage depends on
every key, so any edit to params.yaml runs it, and a bad key stops ``dvc repro`` with one line.
So does a key left out: validation would fill it with config.py's default, which is not always
the study's (``left_out``), and params.yaml is where a run's params are read and recorded.

Every other stage depends on its output (``reports/check.json``), so DVC runs it first, also for
``dvc repro <stage>``: no stage starts on params that did not pass. The file's content is the
same whenever the params are valid, so a valid edit reruns check and nothing else through it.

A few choices are wrong for an architecture, not in themselves: those are tried here on the
untrained architecture (``architecture_fits``), so that they stop the run before the teacher trains
rather than after.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from ..config import ConfigError, Params, flatten, read_yaml
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


def left_out(raw: dict, params: Params) -> dict[str, str]:
    """The keys (``section.key``, or a whole section) that the params file ``raw`` (validated as
    ``params``) leaves out, each with the default that validation filled in, as a line shows it."""
    missing: dict[str, str] = {}
    for name, value in params:
        if name not in raw:
            missing[name] = "its defaults" if isinstance(value, BaseModel) else repr(value)
        elif isinstance(value, BaseModel):
            missing |= {f"{name}.{key}": repr(default) for key, default in value if key not in raw[name]}
    return missing


def run(params: Params, layout: Layout, source: Path | None = None) -> int:
    """Validate; ``source``, the file ``params`` was read from, must also name every key."""
    if source is not None and (missing := left_out(read_yaml(source.read_text(encoding="utf-8"), str(source)), params)):
        raise ConfigError(f"{source}: {', '.join(missing)}: left out, so each would silently take config.py's default ("
                          + ", ".join(f"{key} {default}" for key, default in missing.items())
                          + "); set every key in the file, as the project's params.yaml does")
    keys = flatten(params)
    architecture_fits(params)
    with stage_outputs(layout.checked, root=layout.root) as tmp:
        write_json(tmp / layout.checked.name, PASSED)
    print(f"params: ok ({len(keys)} keys)")
    return len(keys)


def main(argv: list[str] | None = None) -> int:
    # logs nothing: the tracking store is the next stage's to check (run_cli's ``tracked``)
    return run_cli("check", argv, lambda args, params, layout: run(params, layout, Path(args.params)), doc=__doc__,
                   tracked=False)


if __name__ == "__main__":
    raise SystemExit(main())
