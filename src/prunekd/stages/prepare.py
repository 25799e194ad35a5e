"""prepare: real data -> deterministic train/val/test splits + a manifest."""

from __future__ import annotations

import json

import torch

from ..config import Params
from ..data import DATASETS, MANIFEST_FILE, SPLITS, Split, manifest_hash, save_split, split_md5, split_train_val
from ..io import inside, stage_outputs
from ..paths import Layout, split_file
from ..tracking import stage_run
from .cli import run_cli


def channel_stats(split: Split) -> tuple[list[float], list[float]]:
    x = split.x.float() / 255  # (N, C, H, W)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def build_manifest(params: Params, raw, splits: dict[str, Split]) -> dict:
    mean, std = channel_stats(splits["train"])
    return {
        # the raw files by their checksums, not by where they were found (the system's copy, data/raw/,
        # a download): the same data must give the same manifest, and so the same models, anywhere
        "dataset": params.data.dataset, "source_checksums": raw.checksums,
        "classes": list(raw.classes), "input_shape": list(splits["train"].x.shape[1:]),
        "sizes": {k: len(v) for k, v in splits.items()}, "seed": params.seed,
        "val_fraction": params.data.val_fraction, "train_subset": params.data.train_subset,
        "mean": mean, "std": std,
        "mirror_ok": raw.hflip,
        "split_md5": {k: split_md5(v) for k, v in splits.items()},
    }


def run(params: Params, layout: Layout) -> dict:
    """Load, verify and split the dataset; write {train,val,test}.pt and manifest.json."""
    inside(layout.prepared, layout.root)  # a data/ linked out of the project: refused before a download into it
    raw = DATASETS[params.data.dataset](layout.raw)
    train, val = split_train_val(raw.train, params.data.val_fraction, params.seed, params.data.train_subset)
    splits = {"train": train, "val": val, "test": raw.test}
    manifest = build_manifest(params, raw, splits)
    with (stage_run("prepare", params, {"data_manifest_md5": manifest_hash(manifest)}, layout) as run,
          stage_outputs(layout.prepared, root=layout.root) as scratch):  # the previous splits stay until this block succeeds
        out = scratch / layout.prepared.name
        out.mkdir()
        for name in SPLITS:
            save_split(splits[name], split_file(out, name))
        (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        run.log_artifact(out / MANIFEST_FILE, "data")
        run.log_params({"data.source": raw.source})
        run.log_metrics({f"n_{k}": v for k, v in manifest["sizes"].items()})
    print(f"prepared {params.data.dataset} from {raw.source}: "
          + ", ".join(f"{k} {v}" for k, v in manifest["sizes"].items()))
    return manifest["sizes"]


def main(argv: list[str] | None = None) -> int:
    return run_cli("prepare", argv, lambda args, params, layout: run(params, layout), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
