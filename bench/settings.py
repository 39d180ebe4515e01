"""Typed, validated settings of a study, each default written once.

The top level of a study YAML is :class:`StudySettings` and each section one more dataclass here (``data``,
``train``, ``finetune``, ``timing``, ``ray``, ``search``). A field carries its meaning, its kind and its
valid values (a :class:`compress.options.Option`), so a value is checked against its type when the
config is loaded, with the field named (``train.epochs: expected an integer in [1, inf], got 'ten'``),
nothing downstream carries a default of its own (code reads ``settings.field``), and the command line's
flags take their type, range and help from here (``bench.study.cli_flags``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from compress.options import Option


class StudyConfigError(ValueError):
    """A study configuration value is missing or invalid (the message names the field)."""


def setting(
    default: Any,
    doc: str,
    kind: str,
    low: float | None = None,
    high: float | None = None,
    open: str = "[]",
    choices: tuple = (),
    check: Callable[[Any], str | None] | None = None,
):
    """Return a dataclass field with its :class:`Option` (meaning, kind, range) in the metadata.

    A default of None makes None a valid value ("not set": the docstring of the field says what then
    happens). ``check(value)`` returns what is wrong with a value beyond its kind, or None.
    """
    metadata = {"option": Option(doc, kind, low, high, open, choices, default), "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def field_problem(spec: dataclasses.Field, value) -> str | None:
    """Return what is wrong with ``value`` for the settings field ``spec`` (None if it is valid)."""
    option: Option = spec.metadata["option"]
    if value is None:
        return None if option.default is None else f"expected {_expected(option)}, got None"
    problem = option.problem(value)
    if problem:
        return problem.replace("must be ", "expected ", 1)
    check = spec.metadata.get("check")
    return check(value) if check else None


def _expected(option: Option) -> str:
    problem = option.problem(object()) or ""
    return problem.replace("must be ", "", 1).rsplit(", got", 1)[0] or option.kind


def _path(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


class Settings:
    """Base of the settings dataclasses: validation on construction, and :meth:`from_mapping` for YAML.
    ``SECTION`` is the YAML key of the section ('' for the top level)."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self):
        for spec in dataclasses.fields(self):
            problem = field_problem(spec, getattr(self, spec.name))
            if problem:
                raise StudyConfigError(f"{_path(self.SECTION, spec.name)}: {problem}")

    @classmethod
    def from_mapping(cls, mapping, where: str | None = None):
        """Return the settings in ``mapping`` (a YAML section) over the defaults.

        Raises:
            StudyConfigError: ``mapping`` is not a mapping, has an unknown key (named, with the
                closest known one), or a value of the wrong type or out of range (named, with what
                was expected).
        """
        where = cls.SECTION if where is None else where
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, dict):
            raise StudyConfigError(f"{where or 'the study'}: expected a mapping, got {mapping!r}")
        specs = {spec.name: spec for spec in dataclasses.fields(cls)}
        for key, value in mapping.items():
            if key not in specs:
                close = difflib.get_close_matches(str(key), sorted(specs), n=1, cutoff=0.6)
                hint = f"did you mean {_path(where, close[0])}? " if close else ""
                raise StudyConfigError(f"unknown key {_path(where, key)}: {hint}known: {', '.join(sorted(specs))}")
            problem = field_problem(specs[key], value)
            if problem:
                raise StudyConfigError(f"{_path(where, key)}: {problem}")
        return cls(**mapping)

    def to_dict(self) -> dict:
        """Return the settings as a plain dict (what a cell's hash and a record hold)."""
        return dataclasses.asdict(self)


def defaults(cls) -> dict:
    """Return ``{field: default}`` of a settings dataclass."""
    return cls().to_dict()


def _device_problem(value) -> str | None:
    if value in ("auto", "cpu", "mps") or re.fullmatch(r"cuda(:\d+)?", value):
        return None
    return f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}"


def _runtimes_problem(value) -> str | None:
    import deploy

    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return f"expected 'all' or a list of runtime names (empty: none), got {value!r}"
    if list(names) in (["all"],):
        return None
    unknown = [n for n in names if n not in deploy.RUNTIMES]
    return f"unknown runtimes {unknown}; known: {', '.join(deploy.RUNTIMES)}" if unknown else None


def _profiled_runtimes_problem(value) -> str | None:
    from deploy.roofline import PROFILERS

    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        return f"expected a list of runtime names (empty: none), got {value!r}"
    unknown = [n for n in value if n not in PROFILERS]
    return f"no per-layer profiler for {unknown}; known: {', '.join(PROFILERS)}" if unknown else None


def _exact_runtime_problem(value) -> str | None:
    import deploy
    from compress.options import FASTEST

    exact = [name for name, entry in deploy.RUNTIMES.items() if entry.exact]
    return None if value in exact + [FASTEST] else f"expected an fp32 runtime, one of {exact + [FASTEST]}, got {value!r}"


def _format_problem(value) -> str | None:
    from bench.data.layouts import formats

    return None if value in formats() else f"expected one of {list(formats())} (bench.data.layouts), got {value!r}"


def _text(value) -> str | None:
    return None if isinstance(value, str) and value else f"expected text, got {value!r}"


def _seeds_problem(value) -> str | None:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
        and len(set(value)) == len(value)
    ):
        return None
    return f"expected a list of distinct integers >= 0, e.g. [0, 1, 2], got {value!r}"


def _study_name_problem(value) -> str | None:
    import os

    return (
        None
        if isinstance(value, str) and value and os.sep not in value
        else f"expected a name (text without '{os.sep}'), got {value!r}"
    )


EXECUTORS = ("sequential", "ray")


@dataclass
class StudySettings(Settings):
    """The top level of a study YAML (its sections, ``data``, ``train``, ``finetune``, ``timing``, ``ray`` and ``search``,
    are the dataclasses below): what the study is called, its models, seeds and variants, and where its cells run."""

    SECTION: ClassVar[str] = ""

    study: str = setting("default", "study name: the folder under results/ and reports/", "any", check=_study_name_problem)
    models: list = setting(
        ["slimnet"],
        "model names or {name, kwargs, train, pretrained, checkpoint, variant, compressions}",
        "any",
        check=lambda v: None if isinstance(v, list) and v else f"expected a non-empty list of models, got {v!r}",
    )
    reference: str | None = setting(
        None,
        "the model every other model is compared with (paired accuracy differences, latency ratios); None: the first in models",
        "any",
        check=_text,
    )
    seeds: list = setting([0], "seeds: every model and variant runs once per seed", "any", check=_seeds_problem)
    compressions: list = setting(
        [],
        "compression variants of every model (a model's own list replaces them)",
        "any",
        check=lambda v: None if isinstance(v, list) else f"expected a list of variants, got {v!r}",
    )
    device: str | None = setting(
        None,
        "training device of every model: 'auto', 'cpu', 'cuda' or 'cuda:N' (None: train.device)",
        "any",
        check=_device_problem,
    )
    threads: int | None = setting(None, "torch CPU threads for training (None: torch's default, all cores)", "int", 1, None)
    executor: str = setting(
        "sequential", "where cells run: this process one by one, or Ray tasks (ray section)", "str", choices=EXECUTORS
    )
    mlflow: str | None = setting(
        None,
        "an MLflow tracking URI (a server, or sqlite:///path.db): every cell is logged there as a run "
        "after the study (None: no tracking)",
        "any",
        check=_text,
    )


@dataclass
class RaySettings(Settings):
    """The Ray executor: the cluster to join (None: start a local one) and the CPUs each cell asks for."""

    SECTION: ClassVar[str] = "ray"

    address: str | None = setting(
        None, "HOST:PORT or 'auto' to join a running cluster (None: start a local one)", "any", check=_text
    )
    cpus_per_cell: int = setting(1, "CPUs each Ray task asks for (a cell's threads when set)", "int", 1, None)
    num_cpus: int | None = setting(None, "CPUs of the local cluster started here (None: all)", "int", 1, None)


@dataclass
class TrainSettings(Settings):
    """Training hyper-parameters; the defaults are the Slim-CNN reference's (Adam 1e-4, wd 1e-4)."""

    SECTION: ClassVar[str] = "train"

    epochs: int = setting(1, "training epochs", "int", 1, None)
    batch_size: int = setting(32, "training batch size", "int", 1, None)
    lr: float = setting(1e-4, "Adam learning rate", "float", 0, None, "(]")
    weight_decay: float = setting(1e-4, "Adam weight decay", "float", 0, None)
    lr_step_epochs: int = setting(0, "StepLR step size in epochs; 0 disables decay", "int", 0, None)
    lr_gamma: float = setting(0.1, "StepLR factor", "float", 0, None, "(]")
    pos_weight: bool = setting(False, "weight positives by n_neg / n_pos per attribute (class imbalance)", "bool")
    freeze_backbone_epochs: int = setting(0, "transfer protocol: train only the head for this many epochs", "int", 0, None)
    unfreeze_lr: float | None = setting(
        None, "transfer protocol: learning rate once all layers train (None: keep lr)", "float", 0, None, "(]"
    )
    hflip: bool = setting(False, "random horizontal flips (face attributes are mirror-invariant)", "bool")
    channels_last: bool = setting(True, "channels_last memory format (faster convolutions on CPUs)", "bool")
    precision: str = setting(
        "auto",
        "training arithmetic: bf16 autocast, fp32, or auto (bf16 where the device computes it natively: "
        "AVX512_BF16 or AMX CPUs, GPUs with bf16; fp32 elsewhere); evaluation is always fp32",
        "str",
        choices=("auto", "fp32", "bf16"),
    )
    compile: bool = setting(
        False,
        "compile the model with torch.compile before training (pays only when the run is long enough to "
        "win back its compile time; run_bench.py profile --train measures both)",
        "bool",
    )
    seed: int = setting(0, "seed of weights, shuffling and flips", "int", 0, None)
    device: str = setting("auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'", "any", check=_device_problem)
    eval_batch_size: int = setting(64, "evaluation batch size (the logits do not depend on it)", "int", 1, None)


@dataclass
class FinetuneSettings(Settings):
    """Fine-tuning after compression; None in ``lr``, ``batch_size`` and ``hflip`` means the training setting's value."""

    SECTION: ClassVar[str] = "finetune"

    epochs: int = setting(1, "fine-tuning epochs after compression (0: none)", "int", 0, None)
    lr: float | None = setting(None, "learning rate (None: training's)", "float", 0, None, "(]")
    norm_lambda: float = setting(0.0, "weight of LWALM's factor-norm penalty (0: none)", "float", 0, None)
    limit_train: int | None = setting(None, "fine-tune on the first N training images (None: all)", "int", 1, None)
    batch_size: int | None = setting(None, "batch size (None: training's)", "int", 1, None)
    distill: float = setting(0.0, "knowledge-distillation weight alpha: the uncompressed model teaches (0: none)", "float", 0, 1)
    temperature: float = setting(2.0, "distillation temperature", "float", 0, None, "(]")
    hflip: bool | None = setting(None, "random horizontal flips (None: training's)", "bool")
    lr_step_epochs: int = setting(0, "StepLR step in epochs (0: constant)", "int", 0, None)
    bn_recalibration: int = setting(
        0,
        "re-estimate BatchNorm's running statistics on the first N training images right after compression, before any "
        "fine-tune (0: no); with epochs 0 a fine-tune-free screen (EagleEye's adaptive BatchNorm)",
        "int",
        0,
        None,
    )
    teacher: str | None = setting(
        None,
        "the model whose cell (same seed) distillation learns from (None: the uncompressed base); "
        "e.g. a more accurate zoo model of the study",
        "any",
        check=_text,
    )

    @property
    def distils(self) -> bool:
        """Return whether a fine-tune learns from a teacher's outputs (a distillation weight and at least one epoch)."""
        return self.distill > 0 and self.epochs > 0

    def train_config(self, train: TrainSettings) -> TrainSettings:
        """Return the training settings a fine-tune runs with: ``train`` with this section's values over it."""
        return dataclasses.replace(
            train,
            epochs=max(1, self.epochs),
            lr=self.lr if self.lr is not None else train.lr,
            batch_size=self.batch_size or train.batch_size,
            lr_step_epochs=self.lr_step_epochs,
            freeze_backbone_epochs=0,
            hflip=train.hflip if self.hflip is None else self.hflip,
        )


def _int8_problem(value) -> str | None:
    import deploy

    if not isinstance(value, dict):
        return f"expected a mapping of int8 settings, got {value!r}"
    try:
        deploy.Int8Settings.from_mapping(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass
class TimingSettings(Settings):
    """How a study measures costs: latency runtimes, batch sizes, interleaved timing and the per-layer table."""

    SECTION: ClassVar[str] = "timing"

    latency: bool = setting(True, "time latency (false: count parameters, MACs and bytes only)", "bool")
    runtimes: Any = setting("all", "runtimes timed: 'all' or a list of deploy runtime names", "any", check=_runtimes_problem)
    batch_n: int = setting(32, "the batch size timed beside 1", "int", 1, None)
    blocks: int = setting(5, "interleaved blocks per runtime and batch size, at least", "int", 2, None)
    max_blocks: int = setting(40, "interleaved blocks per runtime and batch size, at most", "int", 2, None)
    max_seconds: float = setting(
        240.0,
        "seconds the timing phase's blocks may take (building the runtimes comes on top), "
        "added until every ratio is known to ratio_tolerance_pct",
        "float",
        0,
        None,
    )
    ratio_tolerance_pct: float = setting(
        3.0,
        "half-width of the 95 % interval (percent) wanted for every ratio to the reference model and every speed-up over a base",
        "float",
        0,
        None,
        "(]",
    )
    peak_tries: int = setting(
        3, "times the fp32 peak is measured at the start of the timing phase (the best counts)", "int", 1, None
    )
    busy_ratio: float = setting(
        1.3, "a block is retimed (then flagged busy) when a load probe ran this much above its best", "float", 1, None, "(]"
    )
    interleave: str = setting(
        "bursts",
        "within a block, each model's calls back to back (blocks), the models taking turns call by call (calls), or "
        "taking turns of deploy.BURST_CALLS timed calls after one untimed call (bursts)",
        "str",
        choices=("blocks", "calls", "bursts"),  # deploy.INTERLEAVE_MODES (settings load without importing torch)
    )
    min_iters: int = setting(3, "calls per candidate and block, at least", "int", 1, None)
    min_seconds: float = setting(0.1, "seconds per candidate and block, at least", "float", 0, None)
    threads: int | None = setting(None, "threads timed with (None: torch's default, all cores)", "int", 1, None)
    int8: dict = setting(
        {},
        "int8 settings of the models without a quantize step (deploy.Int8Settings: calibration_method, "
        "calibration_images, per_channel, reduce_range, percentile; defaults there)",
        "any",
        check=_int8_problem,
    )
    int8_max_drop: float | None = setting(
        None,
        "accuracy control for the int8 runtimes of the models without a quantize step: "
        "nodes stay in float until the validation drop is at most this many points "
        "(None: off)",
        "float",
        0,
        None,
    )
    layer_runtimes: list = setting(
        ["eager", "onnxruntime"], "runtimes of the per-layer speed-up table", "any", check=_runtimes_problem
    )
    layer_blocks: int = setting(3, "interleaved blocks per layer in the per-layer table", "int", 1, None)
    layer_min_iters: int = setting(5, "calls per layer and block, at least", "int", 1, None)
    layer_min_seconds: float = setting(0.05, "seconds per layer and block, at least", "float", 0, None)
    profile_runtimes: list = setting(
        ["onnxruntime", "openvino"],
        "runtimes whose own profiler times every layer of every model at batch 1 and batch_n, against its roofline "
        "(layers.csv rows of kind profiled; empty: none); those among the runtimes timed",
        "any",
        check=_profiled_runtimes_problem,
    )
    footprint: bool = setting(
        False,
        "measure every model's peak memory (batch 1 and batch_n) and cold start in every runtime timed, each in fresh "
        "processes (deploy.footprint)",
        "bool",
    )
    footprint_repeats: int = setting(3, "fresh processes per model, runtime and batch size for the footprint", "int", 1, None)
    profile_runs: int = setting(
        10, "profiled calls per model, runtime and batch size (after a third as many warm-ups)", "int", 1, None
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_blocks < self.blocks:
            raise StudyConfigError(f"timing.max_blocks: expected at least timing.blocks ({self.blocks}), got {self.max_blocks}")

    def int8_settings(self):
        """Return the ``deploy.Int8Settings`` of the models without a quantize step."""
        import deploy

        return deploy.Int8Settings.from_mapping(self.int8)

    def layer_timing(self) -> dict:
        """Return the per-layer timer's keyword settings (``bench.speedup.layer_speedup_table``)."""
        return {
            "runtimes": tuple(self.layer_runtimes),
            "blocks": self.layer_blocks,
            "min_iters": self.layer_min_iters,
            "min_seconds": self.layer_min_seconds,
            "threads": self.threads,
        }


def _image_size_problem(value) -> str | None:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in value)
    ):
        return None
    return f"expected [height, width] in pixels (integers >= 8), got {value!r}"


@dataclass
class DataSettings(Settings):
    """Which data a study uses: a dataset folder or table (``data_dir``), or the built-in synthetic set."""

    SECTION: ClassVar[str] = "data"

    data_dir: str | None = setting(
        None,
        "CelebA folder, attribute table or PA-100K folder (None: the built-in synthetic set)",
        "any",
        check=lambda v: None if isinstance(v, str) and v else f"expected a path, got {v!r}",
    )
    synthetic_images: int = setting(3000, "images of the synthetic set (CelebA's 80/10/10 partition)", "int", 10, None)
    synthetic_seed: int = setting(0, "seed of the synthetic set", "int", 0, None)
    limit_train: int | None = setting(None, "the first N training images (None: all)", "int", 1, None)
    limit_val: int | None = setting(None, "the first N validation images (None: all)", "int", 1, None)
    limit_test: int | None = setting(None, "the first N test images (None: all)", "int", 1, None)
    cache_dir: str | None = setting(
        None,
        "where decoded images are cached (None: $SLIMBENCH_CACHE or ~/.cache/slimbench)",
        "any",
        check=lambda v: None if isinstance(v, str) and v else f"expected a path, got {v!r}",
    )
    format: str | None = setting(
        None, "the dataset layout, a row of bench.data.layouts (None or auto: detected)", "any", check=_format_problem
    )
    image_size: list | None = setting(None, "decode size [H, W] (None: the first image's)", "any", check=_image_size_problem)
    name: str | None = setting(
        None, "the dataset's name in tables", "any", check=lambda v: None if isinstance(v, str) else f"expected text, got {v!r}"
    )
    annotations: Any = setting(None, "csv: the attribute table, when data_dir is a folder holding several", "any")
    image_column: str | None = setting(None, "csv: the image column", "any")
    split_column: str | None = setting(None, "csv: the split column", "any")
    attributes: list | None = setting(None, "csv: the attribute columns (None: all others)", "any")
    split_files: dict | None = setting(None, "csv: {train: file, val: file, test: file} of image paths", "any")
    image_root: str | None = setting(None, "csv: folder image paths are relative to (None: the table's)", "any")
    delimiter: str | None = setting(None, "csv: the column delimiter (None: detected)", "any")


SEARCH_KNOBS = ("prune", "stem", "svd", "quantize")


def _finetune_mapping_problem(value) -> str | None:
    if not isinstance(value, dict):
        return f"expected a mapping of finetune settings, got {value!r}"
    try:
        FinetuneSettings.from_mapping(value, "search.screen")
    except StudyConfigError as exc:
        return str(exc)
    return None


def _knobs_problem(value) -> str | None:
    if (
        not isinstance(value, (list, tuple))
        or not value
        or any(k not in SEARCH_KNOBS for k in value)
        or len(set(value)) != len(value)
    ):
        return f"expected a non-empty list of distinct knobs from {list(SEARCH_KNOBS)}, got {value!r}"
    return None


@dataclass
class SearchSettings(Settings):
    """A multi-objective search over compression pipelines of one trained model (``bench.search``): validation accuracy
    against latency in ``runtime`` at ``batch``, each trial screened cheaply (``screen``), the front then promoted to the
    study's fine-tune and timed with every model of the study."""

    SECTION: ClassVar[str] = "search"

    model: str | None = setting(
        None,
        "the model whose compressions are searched (None: the study's reference model)",
        "any",
        check=lambda v: None if isinstance(v, str) and v else f"expected a model name, got {v!r}",
    )
    trials: int = setting(20, "trials (pipelines screened); a rerun continues until this many have finished", "int", 1, None)
    runtime: str = setting(
        "onnxruntime",
        "the fp32 runtime latency is measured in (fastest: the searched model's fastest fp32 runtime here, among those with an "
        "int8 twin when quantize is a knob); a quantized candidate is timed in its int8 twin (deploy.int8_twin)",
        "any",
        check=_exact_runtime_problem,
    )
    max_latency_ratio: float | None = setting(
        None,
        "constrained mode: the best validation accuracy at a latency ratio to the searched model of at most this (a quantized "
        "candidate in the runtime's int8 twin); None: the accuracy / latency front",
        "float",
        0,
        None,
        "(]",
    )
    batch: int = setting(1, "the batch size latency is measured at", "int", 1, None)
    sampler: str = setting("nsga2", "Optuna's multi-objective sampler: NSGA-II or TPE", "str", choices=("nsga2", "tpe"))
    population: int = setting(
        8, "NSGA-II's population (the first generation is random); TPE's random start-up trials", "int", 2, None
    )
    seed: int = setting(0, "seed of the sampler", "int", 0, None)
    knobs: list = setting(
        list(SEARCH_KNOBS),
        "what a pipeline may do, in this order: prune (ratio, importance, global, round_to), "
        "stem (Tucker-2 of the 7x7 stem, rank ratio), svd (1x1 convs, rank ratio), quantize (int8)",
        "any",
        check=_knobs_problem,
    )
    max_pruning_ratio: float = setting(0.8, "the largest pruning ratio tried", "float", 0, 1, "()")
    min_rank_ratio: float = setting(0.2, "the smallest rank ratio tried (stem and svd)", "float", 0, 1, "()")
    prune_exclude: list = setting(
        [],
        "layer name patterns never pruned (e.g. the stem and the squeeze layers)",
        "any",
        check=lambda v: (
            None if isinstance(v, list) and all(isinstance(p, str) for p in v) else f"expected a list of patterns, got {v!r}"
        ),
    )
    max_drop: float = setting(
        0.5,
        "a quantized candidate's int8 accuracy control: nodes stay in float until the validation drop "
        "is at most this many points",
        "float",
        0,
        None,
    )
    screen: dict = setting(
        {"epochs": 0, "bn_recalibration": 256},
        "how each trial is screened: finetune settings over the study's; the default re-estimates BatchNorm's statistics on "
        "256 training images and fine-tunes nothing (it ranked 20 pipelines by their fully fine-tuned accuracy as well as a "
        "1-epoch 1,000-image distilled fine-tune did, at a seventh of its cost: README, 'The screen')",
        "any",
        check=_finetune_mapping_problem,
    )
    promote: int = setting(
        3,
        "trials promoted to the study's fine-tune and timing phase: screening-front members spread over latency (constrained "
        "mode: the most accurate within the ratio), never one below the majority predictor's validation accuracy",
        "int",
        0,
        None,
    )
    promote_below_majority: bool = setting(
        False,
        "promote trials whose screened validation accuracy is below the majority predictor's too (false: never, when the "
        "screen fine-tunes; a screen without a fine-tune ranks but underestimates what a fine-tune recovers, so its values "
        "are not held against the floor)",
        "bool",
    )
    timing_blocks: int = setting(5, "interleaved blocks timing each candidate against the searched model", "int", 2, None)

    def int8_runtime(self) -> str | None:
        """Return the int8 runtime a quantized candidate is timed in (None when ``runtime`` has none, or is ``fastest``: the
        search resolves it on the searched model first)."""
        import deploy
        from compress.options import FASTEST

        return None if self.runtime == FASTEST else deploy.int8_twin(self.runtime)

    def __post_init__(self):
        super().__post_init__()
        from compress.options import FASTEST

        if "quantize" in self.knobs and self.runtime != FASTEST and self.int8_runtime() is None:
            import deploy

            twins = [entry.quantizes for entry in deploy.RUNTIMES.values() if entry.quantizes]
            raise StudyConfigError(
                f"search.knobs: quantize needs a runtime with an int8 twin ({', '.join(twins)}), "
                f"got search.runtime {self.runtime!r}"
            )
