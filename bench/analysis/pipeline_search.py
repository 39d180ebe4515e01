"""A multi-objective search over compression pipelines of one trained model of a study (``run_bench.py search``).

Each trial is a pipeline (prune -> Tucker-2 of the stem -> SVD -> int8, each step optional) that Optuna's
multi-objective sampler (NSGA-II or TPE) proposes from the trials so far, for two objectives: the mean
accuracy on the **validation** split (a trial's cell is ``validation_only``: the test split stays unseen until the promoted
front is reported) and the
latency in ``search.runtime`` at ``search.batch`` as a ratio to the uncompressed model, the two timed
interleaved in the same blocks right after the trial (a quantized candidate in the runtime's int8 form).

Multi-fidelity: a trial is a cell screened cheaply (``search.screen``: by default its BatchNorm statistics re-estimated,
no fine-tune); its record lives in
the search's own study folder (``results/<study>/search/``: ``cells/``, ``results.csv``), so the study's
tables hold only what was promoted. When the trials are done, up to ``search.promote`` members of the
screening front become variants of the study with the study's own fine-tune (distillation included); the
study's one timing phase then times them with every other model (``bench.study.finish_study``), and the
report's ``search.md`` says whether any of them dominates each zoo model (``bench.front``).

The Optuna study is a journal file (``results/<study>/search/optuna.journal``): a killed search resumes;
finished trials are kept, a trial that was running is asked again with the same pipeline, and its cell is
found in the cache or resumes from its last epoch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from filelock import Timeout

from bench import metrics
from bench.analysis.front import front_rows, zoo_points
from bench.metrics import pareto_front
from bench.settings import FinetuneSettings, SearchSettings, StudyConfigError
from bench.store.files import file_lock, remove_stale_partials, write_json_atomic
from bench.store.records import (
    SEARCH_FILE,
    TRIALS_FILE,
    load_records,
    read_record,
    read_timing,
    record_path,
    search_study_name,
    study_dir,
    write_csv_atomic,
)
from bench.store.schema import TRIAL_COLUMNS, config_hash
from bench.study.config import reference_model, search_settings
from bench.study.variants import validate_step, variant_label, variant_name
from bench.training.evaluate import validation_accuracy
from compress.options import FASTEST

_logger = logging.getLogger(__name__)

RATIO_STEP = 0.05  # pruning and rank ratios are searched on this grid: a finer one only adds timing noise


def stem_layer(model) -> str | None:
    """Return the name of ``model``'s stem: its first dense (ungrouped) convolution with a kernel larger than 1x1, or None."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups == 1 and max(module.kernel_size) > 1:
            return name
    return None


def _grid(low: float, high: float) -> tuple[float, float]:
    return round(round(low / RATIO_STEP) * RATIO_STEP, 2), round(round(high / RATIO_STEP) * RATIO_STEP, 2)


def suggest_pipeline(trial, settings: SearchSettings, stem: str | None, int8: dict | None = None) -> list[dict]:
    """Return the compression pipeline an Optuna ``trial`` proposes (validated steps; empty: the model unchanged).
    A quantize step takes the study's int8 settings (``profile.int8``) and ``settings.max_drop``.

    Every knob of ``settings.knobs`` is suggested in every trial (a fixed space, which NSGA-II's crossover
    needs); a ratio at its "off" end leaves its step out: pruning ratio 0, rank ratio 1.
    """
    steps = []
    if "prune" in settings.knobs:
        low, high = _grid(0.0, settings.max_pruning_ratio)
        ratio = round(trial.suggest_float("pruning_ratio", low, high, step=RATIO_STEP), 2)
        importance = trial.suggest_categorical("importance", ["l1", "l2", "taylor"])
        global_pruning = trial.suggest_categorical("global_pruning", [False, True])
        round_to = trial.suggest_categorical("round_to", [1, 8])
        if ratio > 0:
            step = {
                "method": "prune",
                "pruning_ratio": ratio,
                "importance": importance,
                "global_pruning": global_pruning,
                "round_to": round_to,
            }
            if settings.prune_exclude:
                step["exclude"] = list(settings.prune_exclude)
            steps.append(step)
    for knob, method, layers in (("stem", "tucker2", [stem] if stem else None), ("svd", "svd", None)):
        if knob not in settings.knobs or (knob == "stem" and not stem):
            continue
        low, high = _grid(settings.min_rank_ratio, 1.0)
        rank_ratio = round(trial.suggest_float(f"{knob}_rank_ratio", low, high, step=RATIO_STEP), 2)
        if rank_ratio < 1.0:
            steps.append({"method": method, "rank_ratio": rank_ratio, **({"layers": layers} if layers else {})})
    if "quantize" in settings.knobs and trial.suggest_categorical("quantize", [False, True]):
        steps.append({"method": "quantize", **(int8 or {}), "max_drop": settings.max_drop})
    return [validate_step(step) for step in steps]


def trial_cell(
    base_cell: dict, steps: list[dict], finetune: FinetuneSettings, study: str, name: str, validation_only: bool = False
) -> dict:
    """Return the cell of a pipeline of ``base_cell``'s trained model: in the study ``study`` (the search's, or the
    searched one for a promoted member), named ``name``, fine-tuned with ``finetune``; ``validation_only`` (a screened
    trial) evaluates it on the validation split alone, so the test split stays unseen until the front is reported."""
    elsewhere = {"base_study": base_cell["study"]} if study != base_cell["study"] else {}
    return {
        **base_cell,
        "study": study,
        **elsewhere,
        **({"validation_only": True} if validation_only else {}),
        "variant": name,
        "compression": steps,
        "finetune": finetune.to_dict(),
        "base_hash": config_hash(base_cell),
    }


def searched_base_cell(cells: list[dict], model: str) -> dict:
    """Return the uncompressed cell of ``model`` with the lowest seed among a study's ``cells``.

    Raises:
        StudyConfigError: the study has no such cell.
    """
    bases = [c for c in cells if c["model"] == model and not c.get("compression")]
    if not bases:
        raise StudyConfigError(f"search.model: the study has no uncompressed cell of {model!r} to search compressions of")
    return min(bases, key=lambda c: c["seed"])


def space_key(settings: SearchSettings, base_hash: str) -> str:
    """Return the Optuna study name of a search: what shapes its space and objectives (a change starts a new search;
    ``trials`` and ``promote`` do not, so a longer search continues the shorter one)."""
    shaping = {k: v for k, v in settings.to_dict().items() if k not in ("trials", "promote")}
    return f"{base_hash}-" + hashlib.sha1(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:10]


class SearchBusyError(RuntimeError):
    """Another run holds the search's lock (the message names the lock file)."""


@dataclass
class CandidateTimer:
    """Times candidates against the searched model in one runtime and batch size: both in the same interleaved blocks,
    so a trial's latency objective is a ratio that does not depend on what the machine did minutes earlier. A quantized
    candidate runs in the runtime's int8 twin, the searched model in the fp32 runtime."""

    base: object  # deploy.Deployed
    x: np.ndarray
    example: np.ndarray
    runtime: str
    int8_runtime: str | None
    blocks: int
    threads: int | None = None

    @classmethod
    def for_model(cls, model, data, settings: SearchSettings, threads: int | None = None) -> "CandidateTimer":
        """Return a timer with ``model`` (the searched one) built in ``settings.runtime`` (``fastest``: its fastest fp32
        runtime here, among those with an int8 twin when quantize is a knob).

        Raises:
            deploy.RuntimeUnavailable, deploy.RuntimeParityError: as ``deploy.deploy``.
        """
        import deploy
        from bench.training.evaluate import model_inputs

        example = model_inputs(data, "val", 2, model.data_config)
        x = np.random.default_rng(0).standard_normal((settings.batch, *model.data_config["input_size"])).astype(np.float32)
        runtime = settings.runtime
        if runtime == FASTEST:
            names = [
                n for n, e in deploy.RUNTIMES.items() if e.exact and ("quantize" not in settings.knobs or deploy.int8_twin(n))
            ]
            built, _ = deploy.deploy_all(model, names, example, threads)
            timings = deploy.compare({name: d.timed(x) for name, d in built.items()}, 3, min_iters=5, min_seconds=0.1)
            runtime = min(timings, key=lambda name: timings[name].median_ms)
        base = deploy.deploy(model, runtime, example, threads=threads)
        return cls(base, x, example, runtime, deploy.int8_twin(runtime), settings.timing_blocks, threads)

    def ratio(self, model, data) -> dict:
        """Return ``{runtime, latency_ratio, latency_ratio_lo, latency_ratio_hi}``: ``model``'s latency over the searched
        model's, mean of block medians over mean, with its 95 % bootstrap interval over blocks (paired). A quantized model runs in
        the int8 twin of the runtime, calibrated as the study's timing phase calibrates it.

        Raises:
            deploy.RuntimeUnavailable, deploy.RuntimeParityError: as ``deploy.deploy``.
        """
        import deploy
        from bench.training.evaluate import model_inputs

        quantized = bool(getattr(model, "quantization", None))
        runtime = self.int8_runtime if quantized else self.runtime
        calibration = (
            model_inputs(data, "train", deploy.int8_settings(model).calibration_images, model.data_config) if quantized else None
        )
        built = deploy.deploy(model, runtime, self.example, threads=self.threads, calibration=calibration)
        timings = deploy.compare({"base": self.base.timed(self.x), "candidate": built.timed(self.x)}, self.blocks, 3, 0.1)
        value, low, high = deploy.bootstrap_ratio(timings["candidate"].block_medians, timings["base"].block_medians)
        return {"runtime": runtime, "latency_ratio": value, "latency_ratio_lo": low, "latency_ratio_hi": high}


def _compute_trial(cell: dict, results_dir: str, data=None, progress=None, on_event=None):
    """Compute a trial's cell (cached: a finished one is read back); return ``(status, cell, record or error text)``.
    A compression that fails on this pipeline fails the trial, not the search."""
    from bench.study.runner import compute_and_store

    try:
        kind, cell, record = compute_and_store(cell, results_dir, data=data, progress=progress, on_event=on_event)
    except (ValueError, RuntimeError) as exc:
        return "failed", cell, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return kind, cell, record if record is not None else read_record(record_path(results_dir, cell))


def spread(indices: list[int], costs: list[float], count: int) -> list[int]:
    """Return up to ``count`` of ``indices`` spread evenly over their ``costs`` order (both ends kept)."""
    ordered = sorted(indices, key=lambda i: costs[i])
    if count <= 0:
        return []
    if len(ordered) <= count:
        return ordered
    if count == 1:
        return [ordered[-1]]
    picks = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return [ordered[p] for p in dict.fromkeys(picks.tolist())]


def trial_rows(study, searched: tuple[float, float] | None = None) -> list[dict]:
    """Return one row per trial of an Optuna ``study`` (``TRIAL_COLUMNS``), with the screening front marked: the trials no
    other complete trial, nor the searched model itself (``searched``: its (latency ratio 1, validation accuracy)), beats
    on both latency ratio and validation accuracy."""
    import optuna

    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        row = {column: attrs.get(column, "") for column in TRIAL_COLUMNS}
        row.update(
            {"trial": trial.number, "state": "KILLED" if attrs.get("killed") else trial.state.name, "screening_front": False}
        )
        if trial.state == optuna.trial.TrialState.COMPLETE:
            row["acc_mean_val"] = trial.values[0]
        rows.append(row)
    done = [i for i, r in enumerate(rows) if r["state"] == "COMPLETE" and r["latency_ratio"] != ""]
    if done:
        costs = [float(rows[i]["latency_ratio"]) for i in done] + ([searched[0]] if searched else [])
        scores = [float(rows[i]["acc_mean_val"]) for i in done] + ([searched[1]] if searched else [])
        for j in pareto_front(costs, scores):
            if j < len(done):
                rows[done[j]]["screening_front"] = True
    return rows


def _write_trials(folder: str, rows: list[dict]) -> None:
    write_csv_atomic(os.path.join(folder, TRIALS_FILE), TRIAL_COLUMNS, rows)


def search_plan(config: dict) -> str:
    """Return one line saying what the study's search will do (trials, searched model, sampler, runtime and batch).

    Raises:
        StudyConfigError: the config has no search section, or a bad one.
    """
    settings = search_settings(config)
    if settings is None:
        raise StudyConfigError("search: the study has no search section (add `search: {}` for the defaults, see SearchSettings)")
    return (
        f"search: {settings.trials} trials over compressions of {settings.model or reference_model(config)} "
        f"({settings.sampler}), latency in {settings.runtime} at batch {settings.batch}; a killed search resumes where it stopped"
    )


@dataclass
class SearchRun:
    """One run of a search: the study's config and settings, its loaded data, the searched model and its record, the
    screening settings, the timer and the Optuna study (its journal under ``search_folder``)."""

    config: dict
    settings: SearchSettings
    results_dir: str
    data: object
    base_cell: dict
    base_record: dict
    base_val: float
    stem: str | None
    screen: FinetuneSettings
    timer: CandidateTimer
    study: object
    storage: object
    majority_val: float

    @property
    def base_hash(self) -> str:
        """Return the searched model's cell hash."""
        return config_hash(self.base_cell)

    @property
    def search_name(self) -> str:
        """Return the name of the study that holds the trials' cells."""
        return search_study_name(self.config["study"])

    @property
    def search_folder(self) -> str:
        """Return the folder of the trials' cells, the Optuna journal and trials.csv."""
        return study_dir(self.results_dir, self.search_name)

    @property
    def searched_point(self) -> tuple[float, float]:
        """Return the searched model as a point of the front: (latency ratio 1, its validation accuracy)."""
        return 1.0, self.base_val

    def values(self, accuracy: float, ratio: float) -> list[float]:
        """Return a trial's objective values: validation accuracy and latency ratio, or in constrained mode the accuracy
        alone (the ratio is its constraint)."""
        return [accuracy] if self.settings.max_latency_ratio is not None else [accuracy, ratio]

    def finished(self) -> int:
        """Return how many trials count against ``settings.trials``: complete or failed, neither killed nor a repeat of a
        pipeline already run (a repeat is answered from its cell and spends nothing)."""
        import optuna

        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False, states=done)
            if not t.user_attrs.get("killed") and t.user_attrs.get("repeat_of") in (None, "")
        )


def _prepare_search(config: dict, results_dir: str, cells: list[dict], data) -> SearchRun:
    """Return a search run set up on a study whose cells are computed: the searched model loaded, its Optuna study opened.

    Raises:
        StudyConfigError: no search section or no uncompressed cell of the searched model; ImportError: no Optuna.
    """
    try:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
    except ImportError:
        raise ImportError("the search needs Optuna: pip install -e . (or pip install optuna)") from None
    import models

    settings = search_settings(config)
    if settings is None:
        raise StudyConfigError("search: the study has no search section (add `search: {}` for the defaults, see SearchSettings)")
    base_cell = searched_base_cell(cells, settings.model or reference_model(config))
    base_hash = config_hash(base_cell)
    search_folder = study_dir(results_dir, search_study_name(config["study"]))
    for sub in (search_folder, os.path.join(search_folder, "cells")):
        os.makedirs(sub, exist_ok=True)
        remove_stale_partials(sub)
    base_model = models.load_model(
        os.path.join(study_dir(results_dir, config["study"]), "checkpoints", base_hash, "model.pt")
    ).eval()
    base_record = read_record(record_path(results_dir, base_cell))
    base_val = base_record["row"].get("acc_mean_val")
    if base_val in (None, ""):  # a base cell cached before records held validation accuracy
        base_val = validation_accuracy(base_cell, base_model, data)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(os.path.join(search_folder, "optuna.journal")))
    constrained = settings.max_latency_ratio is not None
    constraints = {"constraints_func": _latency_constraint} if constrained else {}
    sampler = (
        optuna.samplers.NSGAIISampler(population_size=settings.population, seed=settings.seed, **constraints)
        if settings.sampler == "nsga2"
        else optuna.samplers.TPESampler(
            n_startup_trials=settings.population, seed=settings.seed, multivariate=True, **constraints
        )
    )
    study = optuna.create_study(
        study_name=space_key(settings, base_hash),
        storage=storage,
        sampler=sampler,
        directions=["maximize"] if constrained else ["maximize", "minimize"],
        load_if_exists=True,
    )
    return SearchRun(
        config,
        settings,
        results_dir,
        data,
        base_cell,
        base_record,
        float(base_val),
        stem_layer(base_model) if "stem" in settings.knobs else None,
        FinetuneSettings.from_mapping({**config["finetune"], **settings.screen}, "search.screen"),
        CandidateTimer.for_model(base_model, data, settings, config.get("threads")),
        study,
        storage,
        float(metrics.majority_per_attribute_accuracy(data.labels[data.splits["train"]], data.labels[data.splits["val"]]).mean()),
    )


def _latency_constraint(trial) -> list[float]:
    """Return Optuna's constraint of a trial in constrained mode: latency ratio minus its bound (feasible when <= 0)."""
    return list(trial.user_attrs.get("constraint", [0.0]))


def _resume_killed(run: SearchRun) -> None:
    """Mark the trials a killed run left running KILLED and ask their pipelines again (each cell is cached or resumes)."""
    import optuna

    for stale in run.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run.storage.set_trial_user_attr(stale._trial_id, "killed", True)
        run.study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
        run.study.enqueue_trial(stale.params, user_attrs={"resumed_from": stale.number})


def _evaluated_trials(run: SearchRun) -> dict[str, object]:
    """Return ``{config_hash: trial}`` of every complete trial that ran its own cell (the pipelines already answered)."""
    import optuna

    return {
        t.user_attrs["config_hash"]: t
        for t in run.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get("config_hash") and t.user_attrs.get("repeat_of") in (None, "")
    }


def _answer(run: SearchRun, trial, accuracy: float, ratio: float) -> None:
    """Tell the sampler a trial's values (in constrained mode with its constraint: the ratio over its bound)."""
    trial.set_user_attr("latency_ratio", ratio)
    if run.settings.max_latency_ratio is not None:
        trial.set_user_attr("constraint", [ratio - run.settings.max_latency_ratio])
    run.study.tell(trial, run.values(accuracy, ratio))


def _ask(run: SearchRun, width: int) -> list[tuple[object, dict]]:
    """Ask the sampler for up to ``width`` trials; answer at once those that need no cell (the searched model itself, a
    pipeline already evaluated: its values again, marked ``repeat_of``); return the others with their cells."""
    pending = []
    evaluated = _evaluated_trials(run)
    for trial in [run.study.ask() for _ in range(width)]:
        steps = suggest_pipeline(trial, run.settings, run.stem, run.config["timing"]["int8"])
        if not steps:  # every knob off: the searched model itself, its ratio 1 by definition
            for key in ("params", "macs"):
                trial.set_user_attr(key, run.base_record["row"][key])
            for key, value in (("variant", "(uncompressed)"), ("config_hash", run.base_hash), ("repeat_of", "searched model")):
                trial.set_user_attr(key, value)
            _answer(run, trial, run.base_val, 1.0)
            continue
        name = variant_name(steps)
        cell = trial_cell(run.base_cell, steps, run.screen, run.search_name, name, validation_only=True)
        key = config_hash(cell)
        for attr, value in (("variant", name), ("compression", variant_label(steps)), ("config_hash", key)):
            trial.set_user_attr(attr, value)
        if key in evaluated:  # a pipeline already run: its cell answers, and the budget keeps its trial
            earlier = evaluated[key]
            for attr in ("params", "macs", "runtime", "latency_ratio_lo", "latency_ratio_hi"):
                trial.set_user_attr(attr, earlier.user_attrs.get(attr, ""))
            trial.set_user_attr("repeat_of", earlier.number)
            _answer(run, trial, earlier.values[0], float(earlier.user_attrs["latency_ratio"]))
            continue
        pending.append((trial, cell))
    return pending


def _tell(run: SearchRun, trial, key: str, status: str, result) -> None:
    """Give a computed trial's values to the sampler: validation accuracy and the latency ratio timed now (a failure, when
    the pipeline or its runtime could not be built)."""
    import optuna

    import models

    if status == "failed":
        trial.set_user_attr("error", result)
        run.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    row = result["row"]
    for column in ("params", "macs"):
        trial.set_user_attr(column, row[column])
    model = models.load_model(os.path.join(run.search_folder, "checkpoints", key, "model.pt")).eval()
    try:
        latency = run.timer.ratio(model, run.data)
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot build this candidate fails the trial only
        trial.set_user_attr("error", f"latency: {type(exc).__name__}: {exc}".splitlines()[0][:300])
        run.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    for column, value in latency.items():
        trial.set_user_attr(column, value)
    _answer(run, trial, float(row["acc_mean_val"]), latency["latency_ratio"])


# A sampler that proposes only pipelines already run this many times in a row has nothing new to offer: the search stops.
MAX_REPEATS_IN_A_ROW = 50


def _run_trials(run: SearchRun, executor, progress, on_event) -> None:
    """Run trials until ``settings.trials`` count (a generation at a time on a parallel executor), one run at a time.

    Raises:
        SearchBusyError: another run holds the search's lock.
    """
    parallel = bool(getattr(executor, "parallel", False))
    # One run at a time: the trials a killed run left running are told apart from another run's only under this lock.
    lock = file_lock(os.path.join(run.search_folder, "search"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SearchBusyError(
            f"another run is searching {run.search_folder!r} (it holds {lock.lock_file}); wait for it to finish, "
            "or stop it and rerun: finished trials are kept"
        ) from None
    try:
        _resume_killed(run)
        compute = functools.partial(
            _compute_trial,
            results_dir=run.results_dir,
            data=None if parallel else run.data,
            progress=None if parallel else progress,
            on_event=None if parallel else on_event,
        )
        repeats = 0
        while run.finished() < run.settings.trials and repeats < MAX_REPEATS_IN_A_ROW:
            pending = _ask(run, min(run.settings.trials - run.finished(), run.settings.population if parallel else 1))
            repeats = 0 if pending else repeats + 1
            unique = list({config_hash(cell): cell for _, cell in pending}.values())  # one pipeline asked twice is computed once
            outcome = {config_hash(cell): (status, result) for status, cell, result in executor.map(compute, unique)}
            for trial, cell in pending:
                _tell(run, trial, config_hash(cell), *outcome[config_hash(cell)])
                rows = trial_rows(run.study, run.searched_point)
                _write_trials(run.search_folder, rows)
                on_event("trial", next(r for r in rows if r["trial"] == trial.number))
        if repeats >= MAX_REPEATS_IN_A_ROW:
            _logger.warning(
                "the sampler proposed only pipelines already run %d times in a row: the search stops at %d trials",
                repeats,
                run.finished(),
            )
    finally:
        lock.release()


def promotion_choice(rows: list[dict], base_hash: str, promote: int, floor: float, max_ratio: float | None) -> list[int]:
    """Return the indices of the trial rows to promote: never the searched model, never one whose validation accuracy is
    below ``floor`` (the majority predictor's), each pipeline once; in constrained mode (``max_ratio``) the ``promote``
    most accurate within the ratio, else up to ``promote`` screening-front members spread over latency."""
    usable = [
        i
        for i, r in enumerate(rows)
        if r["state"] == "COMPLETE"
        and r["config_hash"] != base_hash
        and r["latency_ratio"] != ""
        and float(r["acc_mean_val"]) >= floor
    ]
    unique = list({rows[i]["config_hash"]: i for i in usable}.values())
    if max_ratio is not None:
        feasible = [i for i in unique if float(rows[i]["latency_ratio"]) <= max_ratio]
        return sorted(feasible, key=lambda i: -float(rows[i]["acc_mean_val"]))[:promote]
    front = [i for i in unique if rows[i]["screening_front"]]
    return spread(front, [float(r["latency_ratio"]) if r["latency_ratio"] != "" else 0.0 for r in rows], promote)


def promotion_floor(settings: SearchSettings, screen: FinetuneSettings, majority_val: float) -> float:
    """Return the screened validation accuracy a trial needs to be promoted: the majority predictor's (``majority_val``)
    when the screen fine-tunes, else -inf (also with ``settings.promote_below_majority``). A screen without a fine-tune
    ranks what the fine-tune recovers but sits 4.5-13 pt below it (README, "The screen"): its values are no floor's measure."""
    return float("-inf") if settings.promote_below_majority or screen.epochs == 0 else majority_val


def _promoted_cells(run: SearchRun) -> list[dict]:
    """Return the cells of the trials promoted to the study's own fine-tune (:func:`promotion_choice`), and mark them in
    trials.csv."""
    import optuna

    rows = trial_rows(run.study, run.searched_point)
    floor = promotion_floor(run.settings, run.screen, run.majority_val)
    chosen = promotion_choice(rows, run.base_hash, run.settings.promote, floor, run.settings.max_latency_ratio)
    full = FinetuneSettings.from_mapping(run.config["finetune"])
    promoted, trials = [], run.study.get_trials(deepcopy=False)
    for i in chosen:
        trial = trials[rows[i]["trial"]]
        steps = suggest_pipeline(optuna.trial.FixedTrial(trial.params), run.settings, run.stem, run.config["timing"]["int8"])
        cell = trial_cell(run.base_cell, steps, full, run.config["study"], f"#{trial.number} {variant_name(steps)}")
        promoted.append(cell)
        rows[i]["promoted_hash"] = config_hash(cell)
    _write_trials(run.search_folder, rows)
    return promoted


def _summary(run: SearchRun, promoted: list[dict], started: float) -> dict:
    rows = trial_rows(run.study, run.searched_point)
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in run.study.get_trials(deepcopy=False)
        if t.datetime_complete is not None and t.datetime_start is not None
    ]
    settings = run.settings
    return {
        "settings": settings.to_dict(),
        "model": run.base_cell["model"],
        "trial_seconds": sum(durations),
        "base_hash": run.base_hash,
        "runtime": run.timer.runtime,
        "int8_runtime": run.timer.int8_runtime,
        "max_latency_ratio": settings.max_latency_ratio,
        "majority_val": run.majority_val,
        "batch": settings.batch,
        "stem": run.stem,
        "promoted": [config_hash(c) for c in promoted],
        "trials": len(rows),
        "finished": run.finished(),
        "screen": run.screen.to_dict(),
        "search_seconds": time.perf_counter() - started,
    }


def run_search(
    config: dict,
    results_dir: str = "results",
    executor=None,
    progress=None,
    on_event: Callable[[str, dict], None] | None = None,
    retime: bool = False,
) -> dict:
    """Run a study with its search: the study's cells, then ``search.trials`` screened trials (resumed when some are
    done), then the promoted front and the study's one timing phase; return the search's summary (``search.json``:
    the settings, the promoted cells, ``front``: :func:`bench.analysis.front.front_rows`, ``zoo``:
    :func:`bench.analysis.front.zoo_points`).

    ``on_event`` hears the study's events (``bench.study.runner.run_study``) and ``('trial', row)`` after each trial
    (``row`` as in ``trials.csv``), ``('promote', {'cells': n})`` before the front's full fine-tunes. A pipeline the
    sampler proposes again is answered from its cell without spending a trial of the budget.

    Raises:
        StudyConfigError: the config has no ``search`` section, or a bad one; ImportError: Optuna is not installed;
        SearchBusyError: another run is searching the same study (one at a time; the study's cells can be shared);
        whatever the study raises (``bench.study.runner.run_study``). A trial whose compression fails is recorded as failed.
    """
    from bench.study.executors import SequentialExecutor
    from bench.study.runner import compute_cells, finish_study

    started = time.perf_counter()
    on_event = on_event or (lambda kind, item: None)
    executor = executor or SequentialExecutor()
    search_settings(config)  # a bad search section stops here, before any cell
    cells, data, _ = compute_cells(config, results_dir, executor=executor, progress=progress, on_event=on_event)
    run = _prepare_search(config, results_dir, cells, data)
    _run_trials(run, executor, progress, on_event)
    promoted = _promoted_cells(run)
    if promoted:
        on_event("promote", {"cells": len(promoted)})
        compute_cells(config, results_dir, executor=executor, progress=progress, on_event=on_event, cells=promoted, data=data)
    summary = _summary(run, promoted, started)
    folder = study_dir(results_dir, config["study"])
    write_json_atomic(os.path.join(folder, SEARCH_FILE), summary)
    finish_study(config, results_dir, cells + promoted, retime=retime, on_event=on_event)
    records, timing = load_records(results_dir, config["study"]), read_timing(results_dir, config["study"])
    # the verdicts are computed here, where the statistics live; the report only renders them
    summary.update(
        {
            "front": front_rows(records, timing, summary),
            "zoo": zoo_points(records, timing, summary),
            "search_seconds": time.perf_counter() - started,
        }
    )
    write_json_atomic(os.path.join(folder, SEARCH_FILE), summary)
    return summary


__all__ = [
    "CandidateTimer",
    "SearchBusyError",
    "SearchRun",
    "promotion_floor",
    "run_search",
    "search_plan",
    "searched_base_cell",
    "space_key",
    "spread",
    "stem_layer",
    "suggest_pipeline",
    "trial_cell",
    "trial_rows",
]
