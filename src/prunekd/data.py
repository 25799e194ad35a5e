"""Datasets: loading real files, checksums, deterministic splits, in-memory batching.

Every dataset becomes uint8 image tensors (N, C, H, W) plus int64 labels, so the
prepared splits are small, exact, and loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools

import gzip
import hashlib
import json
import math
import os
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .config import val_images
from .errors import UserError
from .io import inside
from .paths import split_file

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# Published MD5s of the .gz files (zalandoresearch/fashion-mnist README), and the MD5s
# of their decompressed IDX payloads: repackagers (Debian, for one) rewrite the gzip
# header, which changes the first but never the second.
FASHION_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                     "9018921c3c673c538a1fc5bad174d6f9"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                    "8181f5470baa50b63fa0f6fddb340f0a"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12e480ee83cd310",
                    "15d484375f8d13e6eb1aabb0c3f46965"),
}


# A download that stalls this long (seconds, per connect or read) counts as failed: without a
# timeout, urllib waits forever on a network that drops packets instead of refusing them.
DOWNLOAD_TIMEOUT_S = 30.0


class DataError(UserError, RuntimeError):
    """Data that is missing, corrupt or unreachable; the message names the file."""


@contextmanager
def download_timeout(seconds: float | None = None) -> Iterator[None]:
    """Bound every socket operation of the downloads inside the block (torchvision sets none)."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds or DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _reason(exc: Exception) -> str:
    """An exception as one short line: torchvision's download errors list every mirror tried,
    one line each, and the last line holds the cause (``<urlopen error timed out>``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class RawDataset:
    train: Split
    test: Split
    classes: tuple[str, ...]
    source: str
    checksums: dict[str, str]
    hflip: bool  # whether a mirrored image is still an image of its class


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def read_verified_gz(path: Path, gz_md5: str, payload_md5: str) -> bytes:
    """Decompressed bytes of ``path``, refused unless they match the published data."""
    blob = path.read_bytes()
    try:
        payload = gzip.decompress(blob)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc}); delete it and prepare again") from None
    if md5(blob) != gz_md5 and md5(payload) != payload_md5:
        raise DataError(f"{path}: checksum mismatch (md5 {md5(payload)} of the payload, expected "
                        f"{payload_md5}); the file is corrupt or not the published one")
    return payload


def parse_idx(payload: bytes) -> np.ndarray:
    """An IDX file (the MNIST family's format) as a uint8 array."""
    ndim = payload[3]
    dims = np.frombuffer(payload, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_dir(raw_dir: Path) -> Path:
    """The first folder in the lookup order that holds all four files."""
    for folder in (raw_dir / "fashion_mnist", raw_dir, SYSTEM_FASHION_MNIST):
        if all((folder / name).is_file() for name, _, _ in FASHION_FILES.values()):
            return folder
    return raw_dir / "fashion_mnist"


def downloadable(folder: Path) -> Path:
    """``folder``, a download's destination in the raw data folder, refused if what goes in it
    would go through a link out of the folder holding that raw folder (the project's ``data/``):
    a download writes nothing outside the project. Reading a linked folder is fine."""
    raw_dir = folder.parent
    inside(folder / "-", raw_dir.parent)
    return folder


def _download_fashion_mnist(folder: Path) -> None:
    """The four files downloaded into ``folder``, each whole or not at all; torchvision's own copy
    (in a temporary folder beside it) is removed whether or not the download succeeds."""
    from torchvision.datasets import FashionMNIST

    tmp = downloadable(folder.parent / "_torchvision.tmp")
    downloadable(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with download_timeout():
            FashionMNIST(str(tmp), download=True)
        src = tmp / "FashionMNIST" / "raw"
        folder.mkdir(parents=True, exist_ok=True)
        for name, _, _ in FASHION_FILES.values():
            shutil.copyfile(src / name, folder / f"{name}.tmp")
            os.replace(folder / f"{name}.tmp", folder / name)
    except Exception as exc:  # any network failure: say what to do instead
        raise DataError(
            f"Fashion-MNIST not found in {folder}, nor in {SYSTEM_FASHION_MNIST}, and the download "
            f"failed ({_reason(exc)}). Install the Debian package 'dataset-fashion-mnist' or "
            f"copy the four *-ubyte.gz files into {folder}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_fashion_mnist(raw_dir: Path) -> RawDataset:
    folder = fashion_mnist_dir(raw_dir)
    if not folder.is_dir() or not all((folder / n).is_file() for n, _, _ in FASHION_FILES.values()):
        _download_fashion_mnist(folder)
    arrays, checksums = {}, {}
    for key, (name, gz_md5, payload_md5) in FASHION_FILES.items():
        payload = read_verified_gz(folder / name, gz_md5, payload_md5)
        arrays[key], checksums[name] = parse_idx(payload), md5(payload)

    def split(images: np.ndarray, labels: np.ndarray) -> Split:
        return Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))

    return RawDataset(split(arrays["train_images"], arrays["train_labels"]),
                      split(arrays["test_images"], arrays["test_labels"]),
                      FASHION_CLASSES, str(folder), checksums, hflip=True)


def load_digits_dataset(raw_dir: Path, test_fraction: float = 0.2) -> RawDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images): a tiny set for fast runs."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(images))
    n_test = int(len(images) * test_fraction)
    test, train = order[:n_test], order[n_test:]

    def split(idx: np.ndarray) -> Split:
        return Split(torch.from_numpy(images[idx]), torch.from_numpy(bunch.target[idx].astype(np.int64)))

    checksums = {"digits": md5(images.tobytes() + bunch.target.astype(np.int64).tobytes())}
    return RawDataset(split(train), split(test), tuple(str(i) for i in range(10)),
                      "sklearn.datasets.load_digits", checksums, hflip=False)


def _torchvision_loader(cls_name: str, hflip: bool) -> Callable[[Path], RawDataset]:
    def load(raw_dir: Path) -> RawDataset:
        import torchvision.datasets as tvd

        cls, root = getattr(tvd, cls_name), raw_dir / cls_name.lower()
        if not any(p.is_file() for p in root.rglob("*")):  # none yet (an empty folder counts as none)
            _tv_download(cls, root)
        try:
            sets = [cls(str(root), train=t, download=False) for t in (True, False)]
        except Exception as exc:  # incomplete or damaged files
            raise DataError(f"{root}: no usable {cls_name} copy ({_reason(exc)}); delete the folder to "
                            f"download it again, or place torchvision's {cls_name} files there") from None
        return RawDataset(*(_tv_split(s) for s in sets), tuple(sets[0].classes), str(root),
                          {"torchvision": cls_name}, hflip)
    return load


def _tv_download(cls, root: Path) -> None:
    """Download a torchvision dataset into ``root``, whole or not at all, failing fast offline."""
    tmp = downloadable(root.with_name(root.name + ".tmp"))
    downloadable(root)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with download_timeout():
            for train in (True, False):
                cls(str(tmp), train=train, download=True)
    except Exception as exc:  # offline, refused, timed out, bad checksum: one message
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{cls.__name__}: no local copy in {root} and the download failed ({_reason(exc)}); "
                        f"connect to the network, or place torchvision's {cls.__name__} files there") from None
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)


def _tv_split(ds) -> Split:
    x = torch.as_tensor(np.asarray(ds.data))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, H, W[, C]) -> (N, C, H, W)
    return Split(x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64))


DATASETS: dict[str, Callable[[Path], RawDataset]] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist": _torchvision_loader("MNIST", hflip=False),
    "cifar10": _torchvision_loader("CIFAR10", hflip=True),
    "cifar100": _torchvision_loader("CIFAR100", hflip=True),
    "digits": load_digits_dataset,
}


def split_train_val(train: Split, val_fraction: float, seed: int,
                    train_subset: int | None = None) -> tuple[Split, Split]:
    """Deterministic shuffle-split by ``seed``; ``train_subset`` keeps the first n train images."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=gen)
    n_val = val_images(len(train), val_fraction)
    if n_val >= len(train):
        raise DataError(f"data.val_fraction: {val_fraction:g} of {len(train)} training images leaves none to "
                        "train on; lower it")
    val_idx, train_idx = order[:n_val], order[n_val:]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    return (Split(train.x[train_idx], train.y[train_idx]),
            Split(train.x[val_idx], train.y[val_idx]))


# ---- prepared splits on disk -------------------------------------------------------

SPLITS = ("train", "val", "test")


def save_split(split: Split, path: Path) -> None:
    torch.save({"x": split.x, "y": split.y}, path)


def split_md5(split: Split) -> str:
    return md5(split.x.numpy().tobytes() + split.y.numpy().tobytes())


def load_split(path: Path, expected_md5: str | None = None) -> Split:
    """A prepared split, refused unless it is whole and matches the manifest's checksum."""
    if not path.is_file():
        raise DataError(f"{path}: prepared split not found; run the prepare stage first")
    try:
        blob = torch.load(path, weights_only=True)
        split = Split(blob["x"], blob["y"])
    except Exception:  # truncated, not a torch file, wrong contents
        raise DataError(f"{path}: unreadable prepared split (truncated, or not written by the prepare stage); "
                        "run the prepare stage again (dvc repro -f prepare)") from None
    if expected_md5 is not None and split_md5(split) != expected_md5:
        raise DataError(f"{path}: corrupt: does not match the checksum in manifest.json; "
                        "run the prepare stage again (dvc repro -f prepare)")
    return split


MANIFEST_FILE = "manifest.json"

# What the stages read from a manifest; a hand-edited or foreign one is refused before any is used.
MANIFEST_KEYS = {"dataset", "classes", "input_shape", "mean", "std", "mirror_ok", "sizes", "split_md5"}


def load_manifest(prepared: Path) -> dict:
    path = prepared / MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; run the prepare stage first")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:120]}); run the prepare stage again "
                        "(dvc repro -f prepare)") from None
    missing = sorted(MANIFEST_KEYS - set(manifest)) if isinstance(manifest, dict) else ["(not a mapping)"]
    if missing:
        raise DataError(f"{path}: not a prunekd manifest (missing {', '.join(missing)}); run the prepare stage "
                        "again (dvc repro -f prepare)")
    shapes = {"classes": list, "input_shape": list, "mean": list, "std": list, "sizes": dict, "dataset": str,
              "mirror_ok": bool, "split_md5": dict}
    wrong = [k for k, kind in shapes.items() if not isinstance(manifest[k], kind)]
    if not wrong and (len(manifest["input_shape"]) != 3 or not all(isinstance(v, int) and v > 0
                                                                   for v in manifest["input_shape"])):
        wrong = ["input_shape"]
    if not wrong:  # one finite mean and positive std per image channel, one checksum per split
        channels = manifest["input_shape"][0]
        stats = {k: manifest[k] for k in ("mean", "std")}
        wrong = [k for k, v in stats.items() if len(v) != channels or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and (k == "mean" or x > 0)
            for x in v)]
        wrong += [] if all(isinstance(manifest["split_md5"].get(n), str) for n in SPLITS) else ["split_md5"]
    if wrong:
        raise DataError(f"{path}: not a prunekd manifest ({wrong[0]!r} is not what prepare writes); run the "
                        "prepare stage again (dvc repro -f prepare)")
    return manifest


def manifest_hash(manifest: dict) -> str:
    """The prepared data's identity: the md5 of its manifest (which holds each split's md5)."""
    return hashlib.md5(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Normalization:
    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class Prepared:
    train: Split
    val: Split
    test: Split
    manifest: dict

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["input_shape"])

    @property
    def normalization(self) -> Normalization:
        return Normalization(self.manifest["mean"], self.manifest["std"])

    @property
    def mirror_ok(self) -> bool:
        """Whether a mirrored image is still of its class (not for digits)."""
        return self.manifest["mirror_ok"]

    @property
    def identity(self) -> dict[str, str]:
        """What a model trained on this data records of it (its meta, its run's tags)."""
        return {"data_manifest_md5": manifest_hash(self.manifest), "dataset": self.manifest["dataset"]}


def check_split(split: Split, manifest: dict, name: str, path: Path) -> None:
    """Refuse a split that disagrees with the manifest (a split and a manifest edited together, the
    checksum recomputed): uint8 images of the manifest's shape, as many as it says, one label each,
    every label one of its classes."""
    x, y = split.x, split.y
    shape, classes = tuple(manifest["input_shape"]), len(manifest["classes"])
    problem = None
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.dtype != torch.uint8:
        problem = f"images of dtype {getattr(x, 'dtype', type(x).__name__)}, not uint8"
    elif x.ndim != 4 or tuple(x.shape[1:]) != shape:
        problem = f"images of shape {tuple(x.shape[1:])}, not the manifest's {shape}"
    elif y.ndim != 1 or len(y) != len(x) or len(x) != manifest["sizes"].get(name):
        problem = f"{len(x)} images and {len(y)} labels; the manifest says {manifest['sizes'].get(name)}"
    elif y.is_floating_point() or (len(y) and (int(y.min()) < 0 or int(y.max()) >= classes)):
        problem = f"labels outside 0 .. {classes - 1} (the manifest's {classes} classes)"
    if problem:
        raise DataError(f"{path}: {problem}; run the prepare stage again (dvc repro -f prepare)")


def load_prepared(prepared: Path) -> Prepared:
    manifest = load_manifest(prepared)
    checksums = manifest["split_md5"]
    splits = []
    for name in SPLITS:
        path = split_file(prepared, name)
        split = load_split(path, checksums[name])
        check_split(split, manifest, name, path)
        splits.append(split)
    return Prepared(*splits, manifest)


# ---- batching ----------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The stats as (1, C, 1, 1) tensors on ``dev``, made once: a tensor made from a list on a GPU is
    a copy the host waits for, which every batch would otherwise pay."""
    return (torch.tensor(mean, device=dev).view(1, -1, 1, 1), torch.tensor(std, device=dev).view(1, -1, 1, 1))


def normalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 standardized with per-channel stats."""
    m, s = _channel_stats(tuple(mean), tuple(std), x.device)
    return (x.float() / 255 - m) / s


def augment(x: torch.Tensor, pad: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per-image random translation by up to ``pad`` pixels (and a random mirror), batched."""
    n, c, h, w = x.shape
    dev = x.device  # the draws come from ``gen`` (the CPU's, checkpointed), the work is done where x is
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # (N, C, H+2p, W+2p)
    # non_blocking: on a GPU the host goes on to queue the work instead of waiting for each copy
    di = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev, non_blocking=True)
    dj = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev, non_blocking=True)
    rows = (di[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dj[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (N, 1, 1, W)
    out = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 rows, cols]
    if not hflip:
        return out
    flip = (torch.rand(n, generator=gen) < 0.5).to(dev, non_blocking=True)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def batch_bounds(n: int, batch_size: int, *, single_ok: bool) -> list[tuple[int, int]]:
    """(start, end) of each mini-batch of ``n`` items; the last may be short. Unless ``single_ok``,
    no batch holds a single item, which BatchNorm cannot normalise in training mode: a last batch
    of one joins the batch before it (257 images at batch 256: one batch of 257)."""
    starts = list(range(0, n, batch_size))
    if not single_ok and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


def batches(split: Split, batch_size: int, gen: torch.Generator | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of a split, shuffled when ``gen`` is given (training: ``batch_bounds`` without
    single-image batches); the last may be short."""
    n = len(split)
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    order = order.to(split.x.device, non_blocking=True)  # one copy an epoch, not one a batch
    for start, end in batch_bounds(n, batch_size, single_ok=gen is None):
        idx = order[start:end]
        yield split.x[idx], split.y[idx]
