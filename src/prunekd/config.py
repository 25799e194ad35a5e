"""Typed, validated params: one model per params.yaml section, loaded once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator

from .errors import UserError

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "digits")
# each dataset's image shape and classes as prepared, known before preparing it (check and the
# latency table build the architecture without the data)
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "fashion_mnist": ((1, 28, 28), 10), "mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100), "digits": ((1, 8, 8), 10)}
# each dataset's training images before the validation split is taken from them (digits: scikit-
# learn's 1,797 less the fifth data.load_digits_dataset holds out for testing), so that check can
# refuse a count beyond the training split before anything is prepared; tests/unit/test_data.py
# holds this to the data
TRAIN_IMAGES = {"fashion_mnist": 60_000, "mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000, "digits": 1_438}
ARCHS = ("mobilenet_v1", "lenet5", "alexnet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16")
# torchvision classification models, spelled "torchvision/<name>" (models.TORCHVISION adapts each)
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
                     "wide_resnet101_2", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                     "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")
CRITERIA = ("l1", "l2", "random", "bn_scale", "fpgm")
MODES = ("ft", "kd", "scratch", "scratch_kd")
UNITS = ("channels", "params", "macs", "latency")
SCHEDULES = ("uniform", "sensitivity", "netadapt")
RUNTIMES = ("onnxruntime", "torch")
TABLE_RUNTIMES = ("onnxruntime",)  # the runtimes a latency lookup table can be measured on
RESIDUAL = ("coupled", "inner")
KEEP = ("last", "best_val")  # which epoch's weights a training run ends with
PRECISIONS = ("fp32", "bf16")  # of the training steps' arithmetic (bf16: autocast)


class ConfigError(UserError, ValueError):
    """A params file that cannot be used; the message names the key at fault."""


# Seeds as numpy takes them. Ratios and seeds must be written as numbers: DVC names each stage by
# the value as written (prune@0.50 for '0.50'), and the folders must carry the same names.
Seed = Annotated[StrictInt, Field(ge=0, lt=2**32)]
Ratio = StrictFloat


MAX_PARAMS_BYTES = 1_000_000


def read_yaml(text: str, source: str) -> object:
    """Parse YAML as DVC parses params.yaml (YAML 1.2, ruamel's safe loader): ``010`` is ten, ``yes``
    a string, and a duplicate key an error, where PyYAML's YAML 1.1 would read eight, true, the last."""
    from ruamel.yaml import YAML, YAMLError

    if len(text) > MAX_PARAMS_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters; a params file is at most {MAX_PARAMS_BYTES:,}")
    try:
        return YAML(typ="safe").load(text)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be params") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{source}: not valid YAML ({where}{getattr(exc, 'problem', None) or exc})") from None


class Section(BaseModel):
    # inf and nan are floats, but no learning rate, temperature or ratio can be one. Strict: a value
    # of another type is refused, not converted (epochs: true is no 1, lr: "0.1" no number, hflip:
    # "yes" no switch: YAML 1.2 reads it as a string); an int is still a float
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class DataConfig(Section):
    dataset: Literal[DATASETS] = "fashion_mnist"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    train_subset: int | None = Field(None, ge=10)

    def training_split(self) -> int:
        """How many images the prepared training split holds (``TRAIN_IMAGES`` less the validation
        split, then the first ``train_subset``), known before the data is read."""
        n = TRAIN_IMAGES[self.dataset]
        kept = n - val_images(n, self.val_fraction)
        return kept if self.train_subset is None else min(kept, self.train_subset)


def val_images(train_images: int, val_fraction: float) -> int:
    """How many of ``train_images`` the validation split takes: the fraction, rounded, at least one."""
    return max(1, int(round(train_images * val_fraction)))


def distinct(items: list, what: str = "entries") -> list:
    """``items``, refused if one repeats: each names a DVC stage, a column or a timed form."""
    if len(set(items)) != len(items):
        raise ValueError(f"{what} must be distinct, got {items}")
    return items


def rule(text: str) -> dict:
    """A field's constraint that its validator checks, for the generated parameter table (which reads
    the JSON schema: bounds and choices it shows itself, a validator's rules only so)."""
    return {"json_schema_extra": {"rule": text}}


class ModelConfig(Section):
    arch: str = Field("mobilenet_v1", **rule(", ".join(f"`{a}`" for a in ARCHS)
                                               + ", or `torchvision/<name>`: " + ", ".join(TORCHVISION_ARCHS)))
    width: float = Field(0.5, gt=0, le=4)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if arch in ARCHS or (arch.startswith("torchvision/") and arch.removeprefix("torchvision/") in TORCHVISION_ARCHS):
            return arch
        raise ValueError(f"unknown value {arch!r}; should be " + ", ".join(repr(a) for a in ARCHS)
                         + ", or 'torchvision/<name>' with <name> one of " + ", ".join(TORCHVISION_ARCHS))


class TrainConfig(Section):
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=1_000_000)
    lr: float = Field(gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    translate: int = Field(0, ge=0, le=8)
    hflip: bool = True
    keep: Literal[KEEP] = "last"  # best_val: the epoch with the best validation top-1 (early stopping)

    def for_data(self, mirror_ok: bool) -> TrainConfig:
        """The training settings alone (a retrain section's sweep keys left out), mirroring only
        where the data allows it (not for digits)."""
        fields = self.model_dump(include=set(TrainConfig.model_fields))
        return TrainConfig(**fields | {"hflip": self.hflip and mirror_ok})


class ComputeConfig(Section):
    """params.yaml's ``train``: how the teacher and retrain stages compute, on whatever device."""
    precision: Literal[PRECISIONS] = "fp32"
    deterministic: bool = True  # deterministic algorithms: on CUDA the price of bit-identical reruns


class TeacherConfig(TrainConfig):
    # the teacher sees only the first n training images (a control: a teacher no better informed
    # than a student retrained on as many)
    train_subset: int | None = Field(None, ge=10, **rule("at most the training split's images"))


class PruneConfig(Section):
    ratios: list[Ratio] = Field(min_length=1, **rule("distinct, each in (0, 1), at most 6 significant digits"))
    unit: Literal[UNITS] = "params"
    criterion: Literal[CRITERIA] = "l1"
    schedule: Literal[SCHEDULES] = "uniform"
    sensitivity_ratios: list[Ratio] = Field([0.2, 0.4, 0.6, 0.8, 0.9], min_length=1,
                                            **rule("distinct, each in (0, 1), at most 6 significant digits"))
    sensitivity_max_drop: float = Field(5.0, ge=0)  # points of validation top-1, before retraining
    round_to: int = Field(1, ge=1, le=64)  # every pruned layer keeps a multiple of this many filters
    bn_recalibration_batches: int = Field(10, ge=0, le=100_000)  # after pruning: BatchNorm statistics from this many batches
    residual: Literal[RESIDUAL] = "coupled"  # inner: channels tied by an addition are not pruned (Li et al.'s ResNets)
    # unit latency: the runtime and batch size whose time a ratio removes, and the lookup table's protocol
    latency_runtime: Literal[RUNTIMES] = Field("onnxruntime", **rule(
        "under unit latency: " + " \\| ".join(f"`{r}`" for r in TABLE_RUNTIMES) + ", one of `measure.runtimes`"))
    latency_batch: int = Field(1, ge=1, le=4096)
    latency_stride: int = Field(2, ge=1, le=64)  # the table measures every n-th width step, interpolates between
    latency_runs: int = Field(50, ge=1, le=100_000)  # profiled passes per network of the table
    # passes per network when a plan is timed against the teacher, in 10 rounds (at least one each:
    # the share's interval is over the rounds)
    latency_repeats: int = Field(300, ge=10, le=100_000)
    max_blocks_removed: int = Field(0, ge=0, le=1000)  # netadapt: whole blocks a plan may remove (0: widths only)

    @field_validator("ratios", "sensitivity_ratios")
    @classmethod
    def _ratios_in_open_unit_interval(cls, ratios: list[float]) -> list[float]:
        for r in ratios:
            if not 0 < r < 1:
                raise ValueError(f"every ratio must lie in (0, 1), got {r}")
            if float(f"{r:g}") != r:  # 0.3333333 would be 0.333333 in latency.csv and every metric's name
                raise ValueError(f"a ratio has at most 6 significant digits (the reports name a ratio by them), "
                                 f"got {r!r}")
        return distinct(ratios, "ratios")


class RetrainConfig(TrainConfig):
    modes: list[Literal[MODES]] = Field(["ft", "kd"], min_length=1, **rule("distinct"))
    seeds: list[Seed] = Field([0], min_length=1, **rule("distinct"))
    # the student sees only the first n training images
    train_subset: int | None = Field(None, ge=10, **rule("at most the training split's images"))

    @field_validator("modes", "seeds")
    @classmethod
    def _distinct(cls, items: list) -> list:
        return distinct(items)


class FtConfig(Section):
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class KdConfig(Section):
    # below ~0.05 the softened logits overflow (exp(logit / T)): every KD loss becomes nan
    temperature: float = Field(4.0, ge=0.05, le=100)
    alpha: float = Field(0.9, ge=0, le=1)


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # how int8 ranges are set from calibration activations


class QuantizeConfig(Section):
    """params.yaml's ``quantize``: each model's int8 form (ONNX Runtime, post-training, static)."""
    calibration_images: int = Field(1024, ge=1, le=1_000_000, **rule("at most the training split's images"))
    method: Literal[CALIBRATION_METHODS] = "minmax"
    per_channel: bool = True  # one int8 scale per output filter (False: one per tensor)



class MeasureConfig(Section):
    runtimes: list[Literal[RUNTIMES]] = Field(["onnxruntime", "torch"], min_length=1, **rule("distinct"))
    batch_sizes: list[int] = Field([1, 64], min_length=1, **rule("distinct, each 1 to 4,096"))
    threads: int = Field(1, ge=1, le=256)
    warmup: int = Field(10, ge=0, le=100_000)
    repeats: int = Field(300, ge=1, le=1_000_000)
    rounds: int = Field(10, ge=1, le=10_000)  # the architectures take turns, this many times

    @field_validator("runtimes", "batch_sizes")
    @classmethod
    def _distinct(cls, items: list) -> list:
        return distinct(items)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if any(not 1 <= b <= 4096 for b in sizes):
            raise ValueError(f"every batch size must lie in 1..4096, got {sizes}")
        return sizes


class Params(Section):
    seed: Seed = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: ComputeConfig = ComputeConfig()
    teacher: TeacherConfig
    prune: PruneConfig
    retrain: RetrainConfig
    ft: FtConfig = FtConfig()
    kd: KdConfig = KdConfig()
    scratch: FtConfig = FtConfig()  # the pruned architecture from random init, cross-entropy
    scratch_kd: KdConfig = KdConfig()  # ... with distillation
    quantize: QuantizeConfig = QuantizeConfig()
    measure: MeasureConfig = MeasureConfig()


def _describe(err: dict) -> str:
    key = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (check its spelling)"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ").replace("Input should", "should")
    if err["type"] == "literal_error":
        return f"{key}: unknown value {echo(err.get('input'))}; {msg}"
    if err["type"] == "value_error":  # our own validators name the value already
        return f"{key}: {msg if len(msg) <= 1000 else msg[:1000] + '...'}"  # ours name the value; a list of them is bounded here
    return f"{key}: {msg} (got {echo(err.get('input'))})"


def echo(value: object, limit: int = 80) -> str:
    """A value as an error line shows it: its repr, cut to ``limit`` characters (an alias bomb's
    expansion would otherwise print megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping; raise ConfigError naming every bad key, on one line."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be params") from None
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from None
    problems = across_sections(params)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return params


def across_sections(params: Params) -> list[str]:
    """What no one key's bounds catch: keys that contradict each other."""
    p, problems = params.prune, []
    data, images = params.data, TRAIN_IMAGES[params.data.dataset]
    if val_images(images, data.val_fraction) >= images:
        problems.append(f"data.val_fraction: {data.val_fraction:g} of {images} training images leaves none to "
                        "train on; lower it")
    else:  # counts of the training split's images, refused here rather than by the stage that reads them
        split = data.training_split()
        for key, count, instead in [("teacher.train_subset", params.teacher.train_subset, ", or null for all"),
                                    ("retrain.train_subset", params.retrain.train_subset, ", or null for all"),
                                    ("quantize.calibration_images", params.quantize.calibration_images, "")]:
            if count is not None and count > split:
                problems.append(f"{key}: {count} is more than the {split} images of the training split; "
                                f"use at most that many{instead}")
    if p.unit == "latency":
        if p.latency_runtime not in params.measure.runtimes:
            problems.append(f"prune.latency_runtime: {p.latency_runtime} is not in measure.runtimes "
                            f"{list(params.measure.runtimes)}: a latency budget is met on a runtime the study times")
        elif p.latency_runtime not in TABLE_RUNTIMES:
            problems.append(f"prune.latency_runtime: {p.latency_runtime}: the latency lookup table is measured on "
                            f"{', '.join(TABLE_RUNTIMES)} only")
    if p.schedule == "netadapt" and p.unit != "latency":
        problems.append(f"prune.schedule: netadapt plans on measured time; it needs prune.unit: latency, "
                        f"not {p.unit}")
    if p.max_blocks_removed and p.schedule != "netadapt":
        problems.append(f"prune.max_blocks_removed: {p.max_blocks_removed}: blocks are removed by the netadapt "
                        f"schedule's search; with schedule {p.schedule} set it to 0")
    return problems


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


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file, which must name every key: one it leaves out would silently
    take this module's default, which is not always the study's (``left_out``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc.__class__.__name__})") from None
    raw = read_yaml(text, str(path))
    params = parse_params(raw, str(path))
    if missing := left_out(raw, params):
        raise ConfigError(f"{path}: {', '.join(missing)}: left out, so each would silently take config.py's default ("
                          + ", ".join(f"{key} {default}" for key, default in missing.items())
                          + "); set every key in the file, as the project's params.yaml does")
    return params


def flatten(params: Params) -> dict[str, object]:
    """params as {'section.key': value}, for logging."""
    out: dict[str, object] = {}
    for key, value in params.model_dump().items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``raw`` (a parsed params file) with ``section.key=value`` overrides applied, as
    ``dvc exp run -S`` applies them (the value read as YAML), and validated; a copy."""
    import copy

    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected section.key=value, e.g. kd.temperature=2")
        *sections, leaf = key.strip().split(".")
        node = out
        for section in sections:
            if not isinstance(node.get(section), dict):
                raise ConfigError(f"override {item!r}: {section!r} is not a section of params.yaml")
            node = node[section]
        node[leaf] = read_yaml(text, f"override {item!r}")
    parse_params(out, "overrides")
    return out
