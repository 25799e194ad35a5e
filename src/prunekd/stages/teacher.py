"""teacher: train the unpruned model on the prepared data."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import resumable
from ..config import Params
from ..data import load_prepared
from ..distill import cross_entropy_loss
from ..models import build_model
from ..paths import PREPARED, TEACHER
from ..tracking import stage_run
from ..train import fit, seed_everything
from .common import clear_outputs, log_data, manifest_tag, normalization, run_cli, save_and_measure, schedule


def run(params: Params, prepared_dir: Path = PREPARED, out_dir: Path = TEACHER) -> dict:
    prepared = load_prepared(prepared_dir)
    seed_everything(params.seed)  # the initial weights come from the seed too
    model = build_model(params.model.arch, prepared.num_classes, prepared.input_shape, params.model.width)
    tags = manifest_tag(prepared.manifest)
    clear_outputs(out_dir)  # the inputs are good: from here a failure leaves no stale outputs
    with (stage_run("teacher", params, tags | {"arch": params.model.arch}) as run,
          resumable("teacher", params.teacher, params.model) as checkpoint):
        log_data(run, prepared, prepared_dir, "training")
        fit(model, prepared.train, prepared.val, normalization(prepared.manifest), schedule(params.teacher, prepared.manifest),
            cross_entropy_loss(), params.seed, run.log_epoch, name="teacher", checkpoint=checkpoint)
        run.set_tags(checkpoint.tags())
        return save_and_measure(model, out_dir, prepared, run, meta=tags)


def main(argv: list[str] | None = None) -> int:
    return run_cli("teacher", argv, lambda args, params: run(params), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
