"""retrain@<ratio>-<mode>-<seed>: recover a pruned model's accuracy.

Modes differ in the loss (cross-entropy or distillation from the teacher) and in the start:
the pruned weights (``ft``, ``kd``) or the pruned architecture re-initialised (``scratch``,
``scratch_kd``: "Rethinking the Value of Network Pruning"'s fair baseline, same epoch budget).
Each mode reads its own params section, named after it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from dataclasses import dataclass
from typing import Callable


from ..checkpoint import resumable
from ..config import Params
from ..data import load_prepared
from ..distill import cross_entropy_loss, distillation_loss
from ..models import PrunableNet, build_model, load_model
from ..paths import MODEL_FILE, Layout, ratio_key
from ..tracking import model_run_id, stage_run
from ..train import LossFn, fit, place, seed_everything
from .artifacts import EpochLog, first_images, load_pruned, load_teacher, log_data, model_folder, save_outputs
from .plans import pruned_channels
from .cli import ratio_arg, run_cli, seed_arg


def _teacher(teacher_file: Path):
    model, _ = load_model(teacher_file)
    return place(model)


def _cross_entropy(section, teacher_file: Path) -> LossFn:
    return cross_entropy_loss(section.label_smoothing)


def _distillation(section, teacher_file: Path) -> LossFn:
    return distillation_loss(_teacher(teacher_file), section.temperature, section.alpha)


@dataclass(frozen=True)
class Mode:
    loss: Callable[[object, Path], LossFn]  # (the mode's params section, teacher file) -> loss
    from_scratch: bool  # re-initialise the pruned architecture instead of keeping its weights


MODES: dict[str, Mode] = {
    "ft": Mode(_cross_entropy, from_scratch=False),
    "kd": Mode(_distillation, from_scratch=False),
    "scratch": Mode(_cross_entropy, from_scratch=True),
    "scratch_kd": Mode(_distillation, from_scratch=True),
}


def starting_model(pruned: PrunableNet, mode: str, seed: int) -> PrunableNet:
    """The pruned model, or for a from-scratch mode the same architecture freshly initialised by ``seed``."""
    if not MODES[mode].from_scratch:
        return pruned
    seed_everything(seed)
    return build_model(**pruned.spec())


def run(params: Params, layout: Layout, ratio: float, mode: str, seed: int) -> dict:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    prepared = load_prepared(layout.prepared)
    # the teacher saw all of them, the student may see fewer (Hinton et al.'s limited-data case)
    train = first_images(prepared.train, params.retrain.train_subset, "retrain.train_subset")
    teacher, _ = load_teacher(layout, params, prepared)
    model, data = load_pruned(layout, ratio, prepared, lambda meta: pruned_channels(teacher, ratio, params, layout, meta))
    teacher_file = layout.teacher / MODEL_FILE
    lineage = {"teacher_run_id": model_run_id(teacher_file),
               "prune_run_id": model_run_id(layout.pruned(ratio) / MODEL_FILE)}
    model = starting_model(model, mode, seed)
    loss = MODES[mode].loss(getattr(params, mode), teacher_file)
    key = ratio_key(ratio)
    name = f"retrain@{key}-{mode}-{seed}"
    loss_identity = (mode, getattr(params, mode), teacher_file)  # what decides the loss
    folder = layout.retrained(ratio, mode, seed)
    with (stage_run(name, params, data | lineage | {"ratio": key, "mode": mode, "seed": str(seed)}, layout) as run,
          resumable(name, *loss_identity, root=layout.checkpoints) as checkpoint,
          model_folder(folder, layout.root) as scratch):  # the previous outputs stay until this block succeeds
        run.log_params({"ratio": key, "mode": mode, "retrain_seed": seed, "unit": params.prune.unit,
                        "criterion": params.prune.criterion})
        log_data(run, prepared, layout.prepared, "training")
        epochs = EpochLog(run)
        fit(model, train, prepared.val, prepared.normalization, params.retrain.for_data(prepared.mirror_ok),
            loss, seed, epochs, name=name, checkpoint=checkpoint, on_keep=run.log_kept, compute=params.train)
        run.set_tags(checkpoint.tags())
        return save_outputs(model, folder, scratch=scratch, prepared=prepared, run=run, meta=data, lineage=lineage,
                            history=epochs.epochs)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ratio", required=True, type=ratio_arg, help="a ratio from prune.ratios")
    p.add_argument("--mode", required=True, choices=list(MODES),
                   help="ft: cross-entropy; kd: distillation; scratch, scratch_kd: the same from random init")
    p.add_argument("--seed", required=True, type=seed_arg, help="a seed from retrain.seeds")


def main(argv: list[str] | None = None) -> int:
    return run_cli("retrain", argv, lambda a, params, layout: run(params, layout, a.ratio, a.mode, a.seed),
                   add_arguments=add_arguments, doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
