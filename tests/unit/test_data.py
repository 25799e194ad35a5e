import re
import gzip
import shutil

import pytest
import torch

from prunekd.data import (FASHION_FILES, SYSTEM_FASHION_MNIST, DataError, Split, augment, batches,
                          load_digits_dataset, load_fashion_mnist, split_train_val)


@pytest.fixture
def raw_copy(tmp_path):
    """A data/raw folder holding links to the real Fashion-MNIST files."""
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for name, _, _ in FASHION_FILES.values():
        (folder / name).symlink_to(SYSTEM_FASHION_MNIST / name)
    return tmp_path


def test_real_fashion_mnist_loads_and_verifies(raw_copy):
    ds = load_fashion_mnist(raw_copy)
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert ds.train.x.dtype == torch.uint8
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10
    assert ds.source == str(raw_copy / "fashion_mnist")


def test_altered_payload_fails_the_checksum(raw_copy):
    target = raw_copy / "fashion_mnist" / "train-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(target.read_bytes()))
    payload[100] = (payload[100] + 1) % 10  # one label changed, still a valid gzip
    target.unlink()
    target.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: checksum mismatch"):
        load_fashion_mnist(raw_copy)


def test_truncated_file_is_reported(raw_copy):
    target = raw_copy / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz"
    blob = target.read_bytes()
    target.unlink()
    target.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: not a readable gzip"):
        load_fashion_mnist(raw_copy)


def test_split_is_deterministic_by_seed_and_disjoint():
    full = Split(torch.arange(1000).view(-1, 1, 1, 1).to(torch.uint8), torch.arange(1000))
    a_train, a_val = split_train_val(full, 0.1, seed=0)
    b_train, b_val = split_train_val(full, 0.1, seed=0)
    c_train, _ = split_train_val(full, 0.1, seed=1)
    assert torch.equal(a_train.y, b_train.y) and torch.equal(a_val.y, b_val.y)
    assert not torch.equal(a_train.y, c_train.y)
    assert len(a_val) == 100 and len(a_train) == 900
    assert not set(a_train.y.tolist()) & set(a_val.y.tolist())


def test_train_subset_keeps_validation_whole():
    full = Split(torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), torch.arange(1000))
    train, val = split_train_val(full, 0.1, seed=0, train_subset=50)
    assert len(train) == 50 and len(val) == 100


def test_digits_is_a_tiny_real_dataset():
    ds = load_digits_dataset(None)
    assert ds.train.x.shape[1:] == (1, 8, 8) and len(ds.train) + len(ds.test) == 1797
    assert int(ds.train.x.max()) == 255


def test_augment_keeps_shape_and_is_seeded():
    x = torch.randint(0, 255, (16, 1, 28, 28), dtype=torch.uint8)
    a = augment(x, 2, True, torch.Generator().manual_seed(0))
    b = augment(x, 2, True, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def test_batches_cover_the_split_once():
    split = Split(torch.zeros(10, 1, 1, 1), torch.arange(10))
    seen = torch.cat([y for _, y in batches(split, 3, torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))


def test_training_batches_never_hold_a_single_image():
    import torch

    from prunekd.data import Split, batches

    split = Split(torch.zeros(257, 1, 2, 2), torch.arange(257))
    sizes = [len(y) for _, y in batches(split, 256, torch.Generator().manual_seed(0))]
    assert sizes == [257]  # the last image joins the batch before it: BatchNorm needs two
    seen = torch.cat([y for _, y in batches(split, 256, torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(257))
    assert [len(y) for _, y in batches(split, 256)] == [256, 1]  # evaluation keeps every batch as it is
    assert [len(y) for _, y in batches(split, 100, torch.Generator())] == [100, 100, 57]


@pytest.mark.parametrize("x, y, says", [
    (torch.zeros(3, 1, 8, 8), torch.zeros(3, dtype=torch.int64), "dtype torch.float32, not uint8"),
    (torch.zeros(3, 1, 9, 8, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), "shape (1, 9, 8), not the manifest's (1, 8, 8)"),
    (torch.zeros(3, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "3 images and 2 labels; the manifest says 3"),
    (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), "4 images and 4 labels; the manifest says 3"),
    (torch.zeros(3, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 10]), "labels outside 0 .. 9"),
])
def test_a_split_that_disagrees_with_its_manifest_is_refused(tmp_path, x, y, says):
    from prunekd.data import DataError, Split, check_split

    manifest = {"input_shape": [1, 8, 8], "classes": [str(i) for i in range(10)], "sizes": {"train": 3}}
    check_split(Split(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 9, 5])), manifest, "train",
                tmp_path / "train.pt")  # agrees: no error
    with pytest.raises(DataError, match=re.escape(says)):
        check_split(Split(x, y), manifest, "train", tmp_path / "train.pt")


GOOD_MANIFEST = {"dataset": "digits", "classes": [str(i) for i in range(10)], "input_shape": [1, 8, 8],
                 "mean": [0.5], "std": [0.25], "mirror_ok": False, "sizes": {"train": 3, "val": 1, "test": 1},
                 "split_md5": {"train": "a", "val": "b", "test": "c"}}


@pytest.mark.parametrize("edit, names", [
    (lambda m: m.pop("split_md5"), "missing split_md5"),  # else no split's checksum would be checked
    (lambda m: m.update(split_md5=[]), "'split_md5'"),
    (lambda m: m["split_md5"].pop("test"), "'split_md5'"),
    (lambda m: m.update(mean=["a"]), "'mean'"),
    (lambda m: m.update(std=[0.0]), "'std'"),
    (lambda m: m.update(std=[0.25, 0.25]), "'std'"),  # one per image channel
    (lambda m: m.update(mean=[True]), "'mean'"),
])
def test_a_hand_edited_manifest_is_refused_in_one_line(tmp_path, edit, names):
    import copy
    import json

    from prunekd.data import load_manifest

    (tmp_path / "manifest.json").write_text(json.dumps(GOOD_MANIFEST))
    assert load_manifest(tmp_path)["split_md5"]["test"] == "c"
    manifest = copy.deepcopy(GOOD_MANIFEST)
    edit(manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError) as err:
        load_manifest(tmp_path)
    [line] = str(err.value).splitlines()
    assert "manifest.json: not a prunekd manifest" in line and names in line and "dvc repro -f prepare" in line


def test_the_manifest_is_the_same_wherever_the_files_were_found(raw_copy, tmp_path):
    """The system's copy or data/raw/ (where setup.sh could not install the system package): the
    same files give the same manifest, so the same model bytes, on either machine."""
    from prunekd.config import load_params
    from prunekd.data import manifest_hash
    from prunekd.stages.prepare import build_manifest

    from ..conftest import ROOT

    params = load_params(ROOT / "params.yaml")
    manifests = []
    for raw in (load_fashion_mnist(raw_copy), load_fashion_mnist(tmp_path / "empty")):  # data/raw, the system's
        train, val = split_train_val(raw.train, params.data.val_fraction, params.seed, 1000)
        manifests.append(build_manifest(params, raw, {"train": train, "val": val, "test": raw.test}))
    assert manifest_hash(manifests[0]) == manifest_hash(manifests[1])


@pytest.mark.parametrize("dataset", ["fashion_mnist", "digits"])
def test_the_training_split_is_known_before_the_data_is_read(raw_copy, dataset):
    """check refuses a count beyond the training split without reading the data: the split's size it
    computes (config.TRAIN_IMAGES, less the validation split, then the subset) is what prepare keeps.
    (MNIST's and CIFAR's counts in the table are torchvision's; they are not on this machine.)"""
    from prunekd.config import TRAIN_IMAGES, DataConfig

    raw = (load_fashion_mnist if dataset == "fashion_mnist" else load_digits_dataset)(raw_copy)
    assert len(raw.train) == TRAIN_IMAGES[dataset]
    for val_fraction, subset in [(0.1, None), (0.37, None), (0.1, 500), (0.5, 10**6)]:
        train, _ = split_train_val(raw.train, val_fraction, 0, subset)
        known = DataConfig(dataset=dataset, val_fraction=val_fraction, train_subset=subset).training_split()
        assert len(train) == known, (val_fraction, subset)
