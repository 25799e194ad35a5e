"""teacher: train the unpruned model on the prepared data."""

from __future__ import annotations

from ..checkpoint import resumable
from ..config import Params
from ..data import load_prepared
from ..distill import cross_entropy_loss
from ..models import build_model
from ..paths import Layout
from ..tracking import stage_run
from ..train import fit, seed_everything
from .artifacts import EpochLog, first_images, log_data, model_folder, save_outputs
from .cli import run_cli


def run(params: Params, layout: Layout) -> dict:
    prepared = load_prepared(layout.prepared)
    train = first_images(prepared.train, params.teacher.train_subset, "teacher.train_subset")
    seed_everything(params.seed)  # the initial weights come from the seed too
    model = build_model(params.model.arch, prepared.num_classes, prepared.input_shape, params.model.width)
    with (stage_run("teacher", params, prepared.identity | {"arch": params.model.arch}, layout) as run,
          resumable("teacher", params.teacher, params.model, root=layout.checkpoints) as checkpoint,
          model_folder(layout.teacher, layout.root) as scratch):  # the previous outputs stay until this block succeeds
        log_data(run, prepared, layout.prepared, "training")
        epochs = EpochLog(run)
        fit(model, train, prepared.val, prepared.normalization, params.teacher.for_data(prepared.mirror_ok),
            cross_entropy_loss(), params.seed, epochs, name="teacher", checkpoint=checkpoint,
            on_keep=run.log_kept, compute=params.train)
        run.set_tags(checkpoint.tags())
        return save_outputs(model, layout.teacher, scratch=scratch, prepared=prepared, run=run,
                            meta=prepared.identity, history=epochs.epochs)


def main(argv: list[str] | None = None) -> int:
    return run_cli("teacher", argv, lambda args, params, layout: run(params, layout), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
