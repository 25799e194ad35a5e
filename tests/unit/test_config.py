import subprocess
import sys

import pytest
import yaml

from prunekd import config, data, latency, models, prune
from prunekd.config import ConfigError, parse_params
from prunekd.stages import retrain

from ..conftest import ROOT


def test_default_params_are_valid(default_params):
    params = parse_params(default_params)
    assert params.prune.ratios == default_params["prune"]["ratios"]
    assert params.kd.temperature == default_params["kd"]["temperature"]


@pytest.mark.parametrize("mutate, key", [
    (lambda p: p["kd"].update(temprature=2.0), "kd.temprature"),
    (lambda p: p.update(sede=1), "sede"),
    (lambda p: p["teacher"].update(epochs="many"), "teacher.epochs"),
    (lambda p: p["teacher"].update(epochs=0), "teacher.epochs"),
    (lambda p: p["retrain"].update(epochs=0), "retrain.epochs"),
    (lambda p: p["prune"].update(ratios=[0.5, 1.0]), "prune.ratios"),
    (lambda p: p["prune"].update(ratios=[0.0]), "prune.ratios"),
    (lambda p: p["prune"].update(criterion="l3"), "prune.criterion"),
    (lambda p: p["prune"].update(unit="bytes"), "prune.unit"),
    (lambda p: p["data"].update(dataset="imagenet"), "data.dataset"),
    (lambda p: p["model"].update(arch="resnet1000"), "model.arch"),
    (lambda p: p["retrain"].update(modes=["ft", "magic"]), "retrain.modes"),
    (lambda p: p["kd"].update(alpha=1.5), "kd.alpha"),
    (lambda p: p["retrain"].update(seeds=[0, 0]), "retrain.seeds"),
    (lambda p: p["prune"].update(round_to=0), "prune.round_to"),
    (lambda p: p["prune"].update(bn_recalibration_batches=-1), "prune.bn_recalibration_batches"),
    (lambda p: p["retrain"].update(train_subset=5), "retrain.train_subset"),
    (lambda p: p["retrain"].update(keep="best"), "retrain.keep"),
    (lambda p: p["teacher"].update(train_subset=5), "teacher.train_subset"),
    (lambda p: p["measure"].update(runtimes=["onnxruntime", "tensorrt"]), "measure.runtimes"),
    (lambda p: p["measure"].update(runtimes=[]), "measure.runtimes"),
    (lambda p: p["measure"].update(batch_sizes=[1, 0]), "measure.batch_sizes"),
    (lambda p: p["retrain"].update(lr=float("inf")), "retrain.lr"),            # validation used to let these by
    (lambda p: p["teacher"].update(lr=float("nan")), "teacher.lr"),
    (lambda p: p["kd"].update(temperature=1e-9), "kd.temperature"),           # every KD loss would be nan
    (lambda p: p["retrain"].update(seeds=[0, 2**32]), "retrain.seeds"),      # outside numpy's seeds
    (lambda p: p.update(seed=-1), "seed"),
])
def test_bad_params_name_the_key(default_params, mutate, key):
    mutate(default_params)
    with pytest.raises(ConfigError) as err:
        parse_params(default_params)
    assert key in str(err.value)


def test_config_choices_match_the_registries():
    assert set(config.RUNTIMES) == set(latency.RUNTIMES)
    assert set(config.DATASETS) == set(data.DATASETS)
    assert set(config.ARCHS) == set(models.MODELS)
    assert set(config.CRITERIA) == set(prune.CRITERIA)
    assert set(config.MODES) == set(retrain.MODES)


# each refusal's line names the key, the value given and what is allowed (the end-to-end tests run
# one case per failure class through the real command line)
@pytest.mark.parametrize("section, change, names", [
    ("prune", {"ratios": [1.5]}, ("prune.ratios", "(0, 1)", "1.5")),
    ("prune", {"ratios": [0.3, 0.3]}, ("prune.ratios", "distinct", "[0.3, 0.3]")),
    # latency.csv and every metric name a ratio by 6 significant digits: 0.3333333 would match no row
    ("prune", {"ratios": [0.5, 0.3333333]}, ("prune.ratios", "6 significant digits", "0.3333333")),
    ("prune", {"sensitivity_ratios": [0.1234567]}, ("prune.sensitivity_ratios", "6 significant digits")),
    ("retrain", {"seeds": [1, 1]}, ("retrain.seeds", "distinct", "[1, 1]")),
    ("kd", {"alpha": 1.5}, ("kd.alpha", "1.5")),
    ("prune", {"bn_recalibration_batches": -1}, ("prune.bn_recalibration_batches", "-1")),
    ("retrain", {"keep": "first"}, ("retrain.keep", "'first'", "'last' or 'best_val'")),
    ("data", {"dataset": "emnist"}, ("data.dataset", "unknown value", "'emnist'")),
    ("prune", {"criterion": "l3"}, ("prune.criterion", "unknown value", "'l3'")),
    ("retrain", {"modes": ["ft", "xx"]}, ("retrain.modes", "unknown value", "'xx'")),
    ("quantize", {"method": "kl"}, ("quantize.method", "unknown value", "'kl'", "'minmax', 'entropy' or 'percentile'")),
    ("quantize", {"calibration_images": 0}, ("quantize.calibration_images", "greater than or equal to 1")),
    # no value converted from another type
    ("teacher", {"epochs": True}, ("teacher.epochs", "should be a valid integer", "True")),
    ("teacher", {"epochs": "3"}, ("teacher.epochs", "should be a valid integer", "'3'")),
    ("retrain", {"lr": "0.1"}, ("retrain.lr", "should be a valid number", "'0.1'")),
    ("retrain", {"hflip": "yes"}, ("retrain.hflip", "should be a valid boolean", "'yes'")),
    ("measure", {"batch_sizes": ["64"]}, ("measure.batch_sizes.0", "should be a valid integer", "'64'")),
    ("measure", {"batch_sizes": [1, True]}, ("measure.batch_sizes.1", "should be a valid integer", "True")),
    # no value so large that a stage would run for ever rather than stop
    ("teacher", {"epochs": 10**30}, ("teacher.epochs", "less than or equal to 10000")),
    ("measure", {"repeats": 10**12}, ("measure.repeats", "less than or equal to 1000000")),
    ("prune", {"latency_repeats": 5}, ("prune.latency_repeats", "greater than or equal to 10")),
])
def test_a_refusal_names_the_key_the_value_and_what_is_allowed(default_params, section, change, names):
    default_params[section].update(change)
    with pytest.raises(ConfigError) as err:
        parse_params(default_params)
    [line] = str(err.value).splitlines()
    assert all(name in line for name in names), line


# keys that contradict each other: refused in one line naming the key
@pytest.mark.parametrize("prune_change, measure_change, names", [
    ({"unit": "latency"}, {"runtimes": ["torch"]},
     ("prune.latency_runtime: onnxruntime is not in measure.runtimes ['torch']",)),
    ({"unit": "latency", "latency_runtime": "torch"}, {},
     ("prune.latency_runtime: torch", "measured on onnxruntime only")),
    ({"schedule": "netadapt"}, {}, ("prune.schedule: netadapt", "needs prune.unit: latency, not params")),
    ({"max_blocks_removed": 2}, {}, ("prune.max_blocks_removed: 2", "with schedule uniform set it to 0")),
])
def test_keys_that_contradict_each_other_are_refused(default_params, prune_change, measure_change, names):
    default_params["prune"].update(prune_change)
    default_params["measure"].update(measure_change)
    with pytest.raises(ConfigError) as err:
        parse_params(default_params)
    [line] = str(err.value).splitlines()
    assert all(name in line for name in names), line
    default_params["prune"].update(unit="latency", schedule="netadapt", latency_runtime="onnxruntime")
    default_params["measure"].update(runtimes=["torch", "onnxruntime"])
    assert parse_params(default_params).prune.unit == "latency"  # any place in measure.runtimes will do


def test_an_unknown_runtime_stops_the_latency_stage_in_one_line(tmp_path, default_params):
    default_params["measure"]["runtimes"] = ["onnxruntime", "tensorrt"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params))
    proc = subprocess.run([sys.executable, "-m", "prunekd.cli", "latency"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("prunekd latency: error: params.yaml: measure.runtimes") and "'tensorrt'" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load_params(tmp_path / "nope.yaml")


def test_repo_params_file_loads():
    assert config.load_params(ROOT / "params.yaml").model.arch == "mobilenet_v1"


# prunekd reads params.yaml as DVC does (YAML 1.2, ruamel's safe loader): where PyYAML (1.1) would
# read a value otherwise, or DVC would name a stage otherwise, the file is refused or read alike.
@pytest.mark.parametrize("change, extra, key", [
    (lambda p: None, "seed: 1\n", "seed"),                                 # DVC refuses duplicate keys
    (lambda p: p["prune"].update(ratios=["0.50"]), "", "prune.ratios"),    # DVC would run prune@0.50
    (lambda p: p["retrain"].update(seeds=["1"]), "", "retrain.seeds"),
])
def test_what_dvc_would_read_differently_is_refused(tmp_path, default_params, change, extra, key):
    change(default_params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(default_params) + extra)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load_params(path)


def test_numbers_are_read_as_yaml_1_2_reads_them(tmp_path, default_params):
    default_params["retrain"]["seeds"] = "[010, 0x1f]"  # placeholder, written raw below
    text = yaml.safe_dump(default_params).replace("'[010, 0x1f]'", "[010, 0x1f]")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert config.load_params(path).retrain.seeds == [10, 31]  # PyYAML: [8, 31]; DVC runs retrain@...-10


def test_a_params_file_that_is_not_utf8_gets_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("seed: 0\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"params.yaml: cannot be read \(UnicodeDecodeError\)"):
        config.load_params(path)


def test_params_that_would_flood_or_overflow_get_one_short_line():
    from prunekd.config import read_yaml

    with pytest.raises(ConfigError, match="nested too deeply"):
        read_yaml("x: " + "[" * 2000 + "]" * 2000, "params.yaml")
    with pytest.raises(ConfigError, match="at most 1,000,000"):
        read_yaml("#" * 1_000_001, "params.yaml")
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcd", "bcde")]
    bomb = read_yaml("\n".join(levels), "params.yaml")["e"]  # 9^5 strings once expanded
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["teacher"]["epochs"] = bomb
    with pytest.raises(ConfigError) as err:
        parse_params(params)
    assert "teacher.epochs" in str(err.value) and len(str(err.value)) < 300


# counts of the training split's images: refused by check, before the data is prepared
@pytest.mark.parametrize("changes, names", [
    ({"quantize": {"calibration_images": 54_001}},
     ("quantize.calibration_images: 54001 is more than the 54000 images of the training split",)),
    ({"data": {"train_subset": 1000}, "retrain": {"train_subset": 1001}},
     ("retrain.train_subset: 1001 is more than the 1000 images", "or null for all")),
    ({"data": {"val_fraction": 0.5}, "teacher": {"train_subset": 30_001}},
     ("teacher.train_subset: 30001 is more than the 30000 images",)),
    ({"data": {"dataset": "digits"}, "quantize": {"calibration_images": 1295}},
     ("quantize.calibration_images: 1295 is more than the 1294 images",)),
    ({"data": {"dataset": "digits", "val_fraction": 0.9999}, "quantize": {"calibration_images": 1}},
     ("data.val_fraction: 0.9999 of 1438 training images leaves none to train on",)),
])
def test_a_count_beyond_the_training_split_is_refused_before_anything_runs(default_params, changes, names):
    for section, change in changes.items():
        default_params[section].update(change)
    with pytest.raises(ConfigError) as err:
        parse_params(default_params)
    [line] = str(err.value).splitlines()
    assert all(name in line for name in names), line
    for section, key in [("quantize", "calibration_images"), ("teacher", "train_subset"), ("retrain", "train_subset")]:
        default_params[section][key] = None if key == "train_subset" else 10
    default_params["data"]["val_fraction"] = 0.1
    assert parse_params(default_params).data.training_split() > 10  # the same data, counts within it


def test_a_params_file_that_leaves_a_key_out_is_refused_naming_the_default_it_would_take(tmp_path, default_params):
    """Every stage reads params through load_params: none goes on with a default the study's file
    does not hold (config.py's teacher batch size 128, say, where params.yaml may say otherwise)."""
    del default_params["teacher"]["batch_size"], default_params["kd"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(default_params))
    with pytest.raises(ConfigError, match=r"params\.yaml: teacher\.batch_size, kd: left out, so each would silently "
                                          r"take config\.py's default \(teacher\.batch_size 128, kd its defaults\)"):
        config.load_params(path)
    assert config.left_out(yaml.safe_load((ROOT / "params.yaml").read_text()), config.load_params(ROOT / "params.yaml")) == {}
