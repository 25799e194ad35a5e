"""prepare: real data -> deterministic train/val/test splits + a manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from ..config import Params
from ..data import DATASETS, SPLITS, Split, save_split, split_md5, split_train_val
from ..io import atomic_dir
from ..paths import PREPARED, RAW
from ..tracking import stage_run
from .common import run_cli


def channel_stats(split: Split) -> tuple[list[float], list[float]]:
    x = split.x.float() / 255  # (N, C, H, W)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def manifest_hash(manifest: dict) -> str:
    return hashlib.md5(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def build_manifest(params: Params, raw, splits: dict[str, Split]) -> dict:
    mean, std = channel_stats(splits["train"])
    return {
        "dataset": params.data.dataset, "source": raw.source, "source_checksums": raw.checksums,
        "classes": list(raw.classes), "input_shape": list(splits["train"].x.shape[1:]),
        "sizes": {k: len(v) for k, v in splits.items()}, "seed": params.seed,
        "val_fraction": params.data.val_fraction, "train_subset": params.data.train_subset,
        "mean": mean, "std": std,
        "mirror_ok": raw.hflip,
        "split_md5": {k: split_md5(v) for k, v in splits.items()},
    }


def run(params: Params, out: Path = PREPARED, raw_dir: Path = RAW) -> dict:
    """Load, verify and split the dataset; write ``out``/{train,val,test}.pt and manifest.json."""
    raw = DATASETS[params.data.dataset](raw_dir)
    train, val = split_train_val(raw.train, params.data.val_fraction, params.seed, params.data.train_subset)
    splits = {"train": train, "val": val, "test": raw.test}
    manifest = build_manifest(params, raw, splits)
    shutil.rmtree(out, ignore_errors=True)  # the data is good: from here a failure leaves no stale splits
    with (stage_run("prepare", params, {"data_manifest_md5": manifest_hash(manifest)}) as run,
          atomic_dir(out) as tmp):  # swapped in last, once everything else succeeded
        for name in SPLITS:
            save_split(splits[name], tmp / f"{name}.pt")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        run.log_artifact(tmp / "manifest.json", "data")
        run.log_metrics({f"n_{k}": v for k, v in manifest["sizes"].items()})
    print(f"prepared {params.data.dataset}: " + ", ".join(f"{k} {v}" for k, v in manifest["sizes"].items()))
    return manifest["sizes"]


def main(argv: list[str] | None = None) -> int:
    return run_cli("prepare", argv, lambda args, params: run(params), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
