#!/usr/bin/env python
"""slimbench main job: run a study (train, evaluate, time), write results and reports.

python run_bench.py                       # the default study (configs/default.yaml), synthetic data
python run_bench.py --data-dir ~/celeba   # same study on a real CelebA copy
python run_bench.py report --study NAME   # re-render reports/NAME from results/NAME alone
python run_bench.py models                # the model zoo, compression methods and runtimes
python run_bench.py profile --models slimnet,mobilenetv3_small_100 --runtimes all   # latency per runtime vs the floor
python run_bench.py search --config configs/slimnet_search.yaml   # compressed Slim-Nets against the zoo (Optuna)
python run_bench.py export --study slimnet_int8_deploy --model "slimnet [prune + int8]" --runtime openvino_int8 --out shipped/
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG_PATH = os.path.join(HERE, "configs", "default.yaml")
COMMANDS = ("run", "search", "report", "models", "profile", "sensitivity", "export")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the command line's parser: its setting flags come from the settings (``bench.study.cli_flags``)."""
    from bench.study.cli_flags import SEARCH_FLAGS, STUDY_FLAGS, add_flags

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run a study (the default command)")
    _add_study_arguments(run)
    add_flags(run, STUDY_FLAGS)
    search = commands.add_parser(
        "search",
        help="search compression pipelines of a study's model for accuracy against latency "
        "(the config's search section, or its defaults), then run the study with the front",
    )
    _add_study_arguments(search)
    add_flags(search, STUDY_FLAGS + SEARCH_FLAGS)
    report = commands.add_parser("report", help="render reports from existing results")
    report.add_argument("--study", default="default")
    report.add_argument("--results-dir", default="results")
    report.add_argument("--reports-dir", default="reports")
    report.add_argument("--no-plots", action="store_true")
    commands.add_parser("models", help="list the model zoo, the compression methods and the runtimes")
    _add_profile_arguments(
        commands.add_parser("profile", help="latency of zoo models in every runtime, against the compute floor")
    )
    _add_sensitivity_arguments(
        commands.add_parser("sensitivity", help="accuracy drop of compressing each layer / coupled group alone")
    )
    export = commands.add_parser(
        "export",
        help="write a study's model as a runtime ships it (ONNX / OpenVINO IR / TorchScript), checked, with its model card",
    )
    export.add_argument("--study", default="default")
    export.add_argument("--model", required=True, help="the model's label in the study's tables, e.g. 'slimnet [prune 0.3]'")
    export.add_argument("--runtime", required=True, help="a runtime the study timed the model in, e.g. openvino_int8")
    export.add_argument("--out", required=True, help="a new folder for the files (never overwritten)")
    export.add_argument("--results-dir", default="results")
    export.add_argument(
        "--tolerance", type=float, default=0.1, help="largest test accuracy difference (points) from the study's, else refused"
    )
    return parser


def _add_study_arguments(parser) -> None:
    """The arguments of ``run`` and ``search`` that are not settings (those come from ``bench.study.cli_flags``)."""
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="study YAML (default: configs/default.yaml)")
    parser.add_argument(
        "--models",
        help="comma-separated model names (see `run_bench.py models`); a name the config lists keeps "
        "its settings (compressions, input size), others use their defaults",
    )
    parser.add_argument("--seed", type=int, help="one seed (sets seeds to [SEED])")
    parser.add_argument(
        "--compress",
        action="append",
        metavar="SPEC",
        help="a compression variant (repeatable), e.g. svd:rank_ratio=0.5 or prune:pruning_ratio=0.5,importance=l2 "
        "or tucker2:rank_ratio=0.5+svd:energy=0.9,rank_selection=energy; replaces the config's compressions "
        "for every model",
    )
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--reports-dir", default="reports")
    parser.add_argument("--pretrained", action="store_true", help="start baselines from pretrained weights (needs internet)")
    parser.add_argument("--checkpoint", help="initial weights for every model in the study (one model only)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--force", action="store_true", help="recompute cells that already have results (and time the study again)"
    )
    parser.add_argument("--retime", action="store_true", help="time the study again even when no cell changed")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_profile_arguments(parser) -> None:
    parser.add_argument("--models", default="slimnet", help="comma-separated model names")
    parser.add_argument("--runtimes", default="all", help="comma-separated runtimes, or all")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument(
        "--input-size",
        default="3x218x178",
        help="CxHxW fed to every model (default: CelebA's aligned size, as the studies feed them), or 'native'",
    )
    parser.add_argument("--repeats", type=_at_least_one, default=5, help="interleaved blocks (reruns) per batch size")
    parser.add_argument("--threads", type=_at_least_one)
    parser.add_argument("--min-iters", type=_at_least_one, default=3, help="calls per runtime and block, at least")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="seconds per runtime and block, at least")
    parser.add_argument(
        "--train",
        action="store_true",
        help="profile a training step in every training set-up instead (ms per "
        "image against the fwd+bwd compute floor; batch: the first of --batch-sizes)",
    )
    parser.add_argument("--compile", action="store_true", help="with --train, also torch.compile (seconds of compilation first)")


def _add_sensitivity_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a trained model (e.g. results/<study>/checkpoints/<hash>/model.pt)")
    parser.add_argument("--method", default="prune", help="prune, or a factorization (svd, tucker2, cp)")
    parser.add_argument("--ratio", type=float, default=0.5, help="pruning ratio, or rank ratio of a factorization")
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="the study YAML whose data section names the data")
    parser.add_argument("--data-dir", help="CelebA root; absent: the config's data")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--study", default="sensitivity", help="folder under results/ and reports/")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--reports-dir", default="reports")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")


def config_from_args(args) -> dict:
    """Return the study config: the YAML file, then the command line's flags over it, validated.

    Raises:
        FileNotFoundError: no config file; StudyConfigError: a bad value, from the file or a flag (named).
    """
    from bench.study.cli_flags import SEARCH_FLAGS, STUDY_FLAGS, apply_flags
    from bench.study.config import StudyConfigError, load_config, validate_config

    config = load_config(args.config)
    if args.command == "search" and config["search"] is None:
        config["search"] = {}  # the search's defaults
    config = apply_flags(config, args, STUDY_FLAGS + (SEARCH_FLAGS if args.command == "search" else ()))
    if args.models:
        # A name the config already lists keeps its entry (kwargs, compressions, training); others come with defaults.
        entries = {(m["name"] if isinstance(m, dict) else m): m for m in config["models"]}
        config["models"] = [entries.get(name, name) for name in (m.strip() for m in args.models.split(",")) if name]
    if args.seed is not None:
        config["seeds"] = [args.seed]
    if args.compress:
        config["compressions"] = list(args.compress)
        config["models"] = [
            {k: v for k, v in m.items() if k != "compressions"} if isinstance(m, dict) else m for m in config["models"]
        ]
    if args.pretrained or args.checkpoint:
        if args.checkpoint and len(config["models"]) != 1:
            raise StudyConfigError("--checkpoint needs exactly one model (--models NAME)")
        config["models"] = [
            {**(m if isinstance(m, dict) else {"name": m}), "pretrained": args.pretrained, "checkpoint": args.checkpoint}
            for m in config["models"]
        ]
    validate_config(config)  # flags are checked as the YAML is: a bad value stops here, before the first cell
    return config


def command_models() -> int:
    """Print the model zoo, the compression methods and the runtimes."""
    import compress
    import deploy
    import models

    rows = models.list_models(with_descriptions=True)
    width = max(len(name) for name, _, _ in rows)
    for name, family, description in rows:
        print(f"{name:<{width}}  {family:<11}  {description}")
    print("\ncompression methods (--compress METHOD:opt=value,...):")
    for name, description in compress.list_methods(with_descriptions=True):
        print(f"  {name:<9} {description}")
    print("\nruntimes (--runtimes NAME,...):")
    for name, entry in deploy.RUNTIMES.items():
        reason = deploy.unavailable_reason(name)
        print(f"  {name:<17} {entry.description}" + (f"  [unavailable: {reason}]" if reason else ""))
    return 0


def _comma_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{flag}: expected comma-separated integers >= 1, e.g. 1,32; got {text!r}")
    return values


def _print_training_profile(args, batch: int, input_size) -> int:
    from bench.analysis.profile import training_profile

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    profile = training_profile(names, batch, input_size, args.repeats, args.min_seconds, args.threads, compiled=args.compile)
    machine = profile.machine
    native = "native" if machine["native_bf16"] else "not native: bf16 is left out"
    print(
        f"{machine['threads']} threads; torch GEMM peak fp32 {machine['fp32_gflops']:.0f} GFLOP/s, "
        f"bf16 {machine['bf16_gflops']:.0f} GFLOP/s ({native}); batch {batch}, {args.repeats} "
        f"interleaved blocks of >= {args.min_seconds} s per set-up; floor = 3 x 2 x MACs / the set-up's peak "
        "(forward + backward)"
    )
    columns = [
        "model",
        "set-up",
        "ms / image",
        "95 % interval",
        "floor (ms / image)",
        "measured / floor",
        "data (ms / image)",
        "compile (s)",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in profile.rows:
        compile_text = "" if row["compile_seconds"] is None else f"{row['compile_seconds']:.0f}"
        print(
            f"| {row['model']} | {row['setup']} | {row['ms_per_image']:.2f} | {row['lo']:.2f}-{row['hi']:.2f} | "
            f"{row['floor_ms_per_image']:.2f} | {row['over_floor']:.2f}x | {row['data_ms_per_image']:.2f} | {compile_text} |"
        )
    return 0


def command_profile(args) -> int:
    """Print each model's latency in every runtime against the compute floor, or with ``--train`` the time per image of a
    training step in every training set-up (``bench.analysis.profile``)."""
    from bench.analysis.profile import inference_profile

    batch_sizes = _comma_ints(args.batch_sizes, "--batch-sizes")
    input_size = None if args.input_size == "native" else [int(v) for v in args.input_size.lower().split("x")]
    if args.train:
        return _print_training_profile(args, batch_sizes[0], input_size)
    runtimes = [r.strip() for r in args.runtimes.split(",")] if args.runtimes != "all" else "all"
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    profile = inference_profile(
        names, runtimes, batch_sizes, input_size, args.repeats, args.min_iters, args.min_seconds, args.threads
    )
    machine = profile.machine
    per_library = ", ".join(f"{k} {v:.0f}" for k, v in machine["per_library"].items())
    print(
        f"{machine['threads']} threads; fp32 peak {machine['peak_gflops']:.0f} GFLOP/s ({machine['peak_library']} GEMM; "
        f"{per_library}); {args.repeats} interleaved blocks of >= {args.min_iters} calls and >= {args.min_seconds} s per runtime"
    )
    columns = [
        "model",
        "GMACs",
        "runtime",
        "batch",
        "median (ms)",
        "p10-p90 (ms)",
        "spread over reruns",
        "floor (ms)",
        "measured / floor",
    ]
    print("| " + " | ".join(columns + ["busy"]) + " |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for name, skipped in profile.skipped.items():
        for runtime, reason in skipped.items():
            print(f"| {name} | | {runtime} | | skipped: {reason} | | | | | |")
    for row in profile.rows:
        print(
            f"| {row['model']} | {row['gmacs']:.3f} | {row['runtime']} | {row['batch']} | {row['median_ms']:.2f} | "
            f"{row['p10_ms']:.2f}-{row['p90_ms']:.2f} | {row['spread_pct']:.1f} % | {row['floor_ms']:.2f} | "
            f"{row['floor_ratio']:.2f}x | {'yes' if row['busy'] else ''} |"
        )
    return 0


def _progress_bar(quiet: bool, unit: str = "img"):
    if quiet:
        return None
    from tqdm.auto import tqdm

    return lambda total=None, desc=None: tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, disable=None)


def command_sensitivity(args) -> int:
    """Analyse a checkpoint's sensitivity (``bench.analysis.sensitivity.run_sensitivity``) and print its table."""
    from bench.analysis.sensitivity import run_sensitivity
    from bench.study.config import load_config

    data = load_config(args.config)["data"]
    if args.data_dir:
        data["data_dir"] = os.path.expanduser(args.data_dir)
    results, reports = os.path.join(args.results_dir, args.study), os.path.join(args.reports_dir, args.study)
    print(
        f"sensitivity of {args.checkpoint}: {args.method} at {args.ratio:g}, one unit at a time, {args.split} split", flush=True
    )
    name, written = run_sensitivity(
        args.checkpoint,
        data,
        args.method,
        args.ratio,
        args.split,
        results,
        reports,
        plots=not args.no_plots,
        progress=_progress_bar(args.quiet, "unit"),
    )
    print(open(written[f"{name}.md"], encoding="utf-8").read())
    print(f"results: {results}/{name}.csv, {name}_attributes.csv; reports: {reports}/")
    return 0


def command_report(args) -> int:
    """Render a study's reports from its results alone and print its summary."""
    from bench.report.render import render_report

    written = render_report(args.results_dir, args.study, args.reports_dir, plots=not args.no_plots)
    if "summary.md" in written:
        print(open(written["summary.md"], encoding="utf-8").read())
    print(f"reports written to {os.path.join(args.reports_dir, args.study)}/ ({len(written)} files)")
    return 0


def command_export(args) -> int:
    """Write a study's model as a runtime ships it, after checking the file reproduces the study's test accuracy."""
    from bench.export.package import export_model

    exported = export_model(args.results_dir, args.study, args.model, args.runtime, args.out, args.tolerance)
    print(
        f"exported {args.model} ({args.runtime}) to {exported.folder}/: {', '.join(exported.files)}\n"
        f"check: the shipped file reaches {exported.acc_mean:.2f} % on the test split with only its runtime loaded "
        f"(the study: {exported.study_acc_mean:.2f} %)"
    )
    return 0


# ---- what a running study says, one line per event ----------------------------------------------------------------


def _cell_label(cell: dict) -> str:
    from bench.report.labels import display_label

    return f"{display_label(cell['model'], cell.get('variant'))} seed {cell['seed']}"


def _done_text(cell: dict) -> str:
    row = cell["row"]
    if row.get("compression"):
        timing = (
            f", no fine-tune {float(row['acc_mean_nofinetune']):.2f} %, fine-tuned {float(row['finetune_seconds'] or 0):.0f} s"
        )
    elif row.get("train_seconds") != "":
        timing = f", trained {float(row['train_seconds']):.0f} s"
    else:
        timing = ""
    text = f"  done: acc_mean {float(row['acc_mean']):.2f} %, {row['params']} params{timing}"
    return text + (f"\n  warning: training diverged: {row['diverged']}" if row.get("diverged") else "")


def _timed_text(timing: dict) -> str:
    parts = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in timing["seconds_by_part"].items())
    lines = [
        f"  timed in {timing['seconds']:.0f} s ({parts}); fp32 peak {timing['machine']['peak_gflops']:.0f} GFLOP/s "
        f"({timing['machine']['peak_library']})"
    ]
    lines += [
        f"  warning: ratio not known to +-{timing['settings']['ratio_tolerance_pct']:g} %: {line}"
        for line in timing.get("unresolved", [])
    ]
    lines += [
        f"  not measured in {runtime} ({key}): {reason}"
        for key, skipped in sorted(timing.get("skipped", {}).items())
        for runtime, reason in sorted(skipped.items())
    ]
    return "\n".join(lines)


def _trial_text(trial: dict) -> str:
    ratio = (
        f"{float(trial['latency_ratio']):.2f}x the searched model's latency" if trial["latency_ratio"] != "" else trial["error"]
    )
    accuracy = f"val acc {float(trial['acc_mean_val']):.2f} %, " if trial["acc_mean_val"] != "" else ""
    return f"  trial {trial['trial']} {trial['state'].lower()}: {trial['variant']}: {accuracy}{ratio}"


EVENT_TEXT = {
    "skip": lambda cell: f"= {_cell_label(cell)}: cached result, skipped (use --force to recompute)",
    "reused": lambda cell: (
        f"= {_cell_label(cell)}: the same cell (data, model, training, seed) finished in study {cell['reused_from']!r}: "
        "its record and checkpoints reused (use --force to recompute)"
    ),
    "start": lambda cell: f"> {_cell_label(cell)}",
    "wait": lambda cell: f"~ {_cell_label(cell)}: another run of this study is computing it; waiting for its result",
    "done": _done_text,
    "timing": lambda item: f"> timing phase: {item['cells']} models, every runtime, in one fresh process",
    "timed": _timed_text,
    "trial": _trial_text,
    "promote": lambda item: f"> search: {item['cells']} front members promoted to the study's fine-tune",
    "study": lambda item: (
        f"study {item['study']!r}: {item['cells']} cells, data: {item['data']} ({item['images']:,} images)"
        + "".join(f"\nwarning: {line}" for line in item["warnings"])
    ),
}


def print_event(kind: str, item: dict) -> None:
    """Print one line (or a few) for an event of a running study (``bench.study.runner.run_study``'s ``on_event``)."""
    print(EVENT_TEXT[kind](item), flush=True)


def _print_written(config: dict, args, written: dict[str, str]) -> None:
    print()
    print(open(written["summary.md"], encoding="utf-8").read())
    print(f"results: {os.path.join(args.results_dir, config['study'])}/results.csv")
    print(f"reports: {os.path.join(args.reports_dir, config['study'])}/ ({len(written)} files)")
    if "search.md" in written:
        print(f"search: {written['search.md']} (front, dominance over the zoo, every trial)")


def command_run(args) -> int:
    """Run the study (and its search, for ``search``), render its reports, log it to MLflow when asked; print what happened."""
    from bench.report.render import render_report
    from bench.store.files import check_writable
    from bench.study.config import StudyConfigError, expand_cells
    from bench.study.executors import make_executor

    config = config_from_args(args)
    expand_cells(config)  # the config alone, before the reports folder is touched
    check_writable(
        os.path.join(args.reports_dir, config["study"]), "reports folder", "--reports-dir"
    )  # now, not after every cell
    if config["search"] is not None and args.force:
        raise StudyConfigError("--force does not apply to a search; remove its folder (results/<study>/search) to start over")
    if config["mlflow"]:
        from bench.report.tracking import check_tracking

        check_tracking(config["mlflow"], config["study"])  # a target that cannot take the study: refused now, not after it
    started = time.perf_counter()
    progress, executor = _progress_bar(args.quiet), make_executor(config)
    if config["search"] is not None:
        from bench.analysis.pipeline_search import run_search, search_plan

        def on_event(kind: str, item: dict) -> None:
            print_event(kind, item)
            if kind == "study":  # the plan after the pre-flight passed: a bad input is then the only line
                print(search_plan(config), flush=True)

        run_search(config, args.results_dir, executor=executor, progress=progress, on_event=on_event, retime=args.retime)
    else:
        from bench.study.runner import run_study

        run_study(
            config,
            args.results_dir,
            force=args.force,
            executor=executor,
            progress=progress,
            on_event=print_event,
            retime=args.retime,
        )
    written = render_report(args.results_dir, config["study"], args.reports_dir, plots=not args.no_plots)
    _print_written(config, args, written)
    print(f"wall time: {time.perf_counter() - started:.0f} s")
    if config["mlflow"]:
        return _log_to_mlflow(config, args)
    return 0


def _log_to_mlflow(config: dict, args) -> int:
    """Log the finished study to MLflow; return 0, or 1 with one line when the target fails now (results and reports
    stay as written: rerunning the same command computes nothing again and only logs)."""
    from bench.report.tracking import log_study
    from bench.store.records import load_records

    try:
        runs = log_study(
            config["mlflow"],
            config["study"],
            load_records(args.results_dir, config["study"]),
            os.path.join(args.reports_dir, config["study"]),
        )
    except Exception as exc:  # the study is done and written: whatever the tracking target did, say so in one line
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        print(
            f"error: logging to MLflow at {config['mlflow']} failed ({reason}); the results and reports are written; "
            f"rerun the same command to log the finished study (no cell is computed again)",
            file=sys.stderr,
        )
        return 1
    print(f"mlflow: {len(runs)} cell runs in experiment {config['study']!r} at {config['mlflow']}")
    return 0


COMMAND_FUNCTIONS = {
    "models": lambda args: command_models(),
    "report": command_report,
    "profile": command_profile,
    "export": command_export,
    "sensitivity": command_sensitivity,
    "run": command_run,
    "search": command_run,
}


def main(argv=None) -> int:
    """Run the command line; return its exit code (2: bad input, one line on stderr; 130: interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["run"] + argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from deploy import steady_allocator

    steady_allocator()  # eager PyTorch's speed (training too) otherwise depends on what the process freed before
    try:
        return COMMAND_FUNCTIONS[args.command or "run"](args)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        # Bad input gets one clear line, not a traceback wall; finished cells are already on disk.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        if os.environ.get("SLIMBENCH_TRACEBACK"):
            raise
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells are saved; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
