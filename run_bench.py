#!/usr/bin/env python
"""slimbench main job: run a study (train, evaluate, profile), write results and reports.

    python run_bench.py                       # the default study (configs/default.yaml), synthetic data
    python run_bench.py --data-dir ~/celeba   # same study on a real CelebA copy
    python run_bench.py report --study NAME   # re-render reports/NAME from results/NAME alone
    python run_bench.py models                # the model zoo
    python run_bench.py profile --models slimnet,mobilenetv3_small_100 --runtimes all   # latency per runtime vs the floor
    python run_bench.py search --config configs/slimnet_search.yaml   # compressed Slim-Nets against the zoo (Optuna)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG_PATH = os.path.join(HERE, "configs", "default.yaml")
COMMANDS = ("run", "search", "report", "models", "profile", "sensitivity")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run a study (the default command)")
    _add_study_arguments(run)
    search = commands.add_parser("search", help="search compression pipelines of a study's model for accuracy against latency "
                                 "(the config's search section, or its defaults), then run the study with the front")
    _add_study_arguments(search)
    search.add_argument("--trials", type=_positive_int, help="trials to finish (a rerun continues a killed or shorter search)")
    search.add_argument("--promote", type=int, help="screening-front members promoted to the study's fine-tune and timing phase")
    search.add_argument("--sampler", choices=("nsga2", "tpe"), help="Optuna's multi-objective sampler")
    search.add_argument("--search-runtime", help="the fp32 runtime latency is measured in (onnxruntime, openvino, eager_cl)")
    report = commands.add_parser("report", help="render reports from existing results")
    report.add_argument("--study", default="default")
    report.add_argument("--results-dir", default="results")
    report.add_argument("--reports-dir", default="reports")
    report.add_argument("--no-plots", action="store_true")
    commands.add_parser("models", help="list the model zoo")
    profile = commands.add_parser("profile", help="latency of zoo models in every runtime, against the compute floor")
    profile.add_argument("--models", default="slimnet", help="comma-separated model names")
    profile.add_argument("--runtimes", default="all", help="comma-separated runtimes, or all")
    profile.add_argument("--batch-sizes", default="1,32")
    profile.add_argument("--input-size", default="3x218x178",
                         help="CxHxW fed to every model (default: CelebA's aligned size, as the studies feed them), or 'native'")
    profile.add_argument("--repeats", type=_positive_int, default=5, help="interleaved blocks (reruns) per batch size")
    profile.add_argument("--threads", type=_positive_int)
    profile.add_argument("--min-iters", type=_positive_int, default=3, help="calls per runtime and block, at least")
    profile.add_argument("--min-seconds", type=float, default=0.2, help="seconds per runtime and block, at least")
    sensitivity = commands.add_parser("sensitivity", help="accuracy drop of compressing each layer / coupled group alone")
    sensitivity.add_argument("--checkpoint", required=True, help="a trained model (e.g. results/<study>/checkpoints/<hash>/model.pt)")
    sensitivity.add_argument("--method", default="prune", help="prune, or a factorization (svd, tucker2, cp)")
    sensitivity.add_argument("--ratio", type=float, default=0.5, help="pruning ratio, or rank ratio of a factorization")
    sensitivity.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="the study YAML whose data section names the data")
    sensitivity.add_argument("--data-dir", help="CelebA root; absent: the config's data")
    sensitivity.add_argument("--split", default="val", choices=("val", "test"))
    sensitivity.add_argument("--study", default="sensitivity", help="folder under results/ and reports/")
    sensitivity.add_argument("--results-dir", default="results")
    sensitivity.add_argument("--reports-dir", default="reports")
    sensitivity.add_argument("--no-plots", action="store_true")
    sensitivity.add_argument("-q", "--quiet", action="store_true")
    return parser


def _add_study_arguments(run) -> None:
    run.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="study YAML (default: configs/default.yaml)")
    run.add_argument("--data-dir", help="CelebA root (official, torchvision or Kaggle layout); absent: synthetic set")
    run.add_argument("--synthetic-images", type=_positive_int, help="size of the built-in synthetic set")
    run.add_argument("--models", help="comma-separated model names (see `run_bench.py models`); a name the config lists keeps "
                                      "its settings (compressions, input size), others use their defaults")
    run.add_argument("--epochs", type=_positive_int)
    run.add_argument("--batch-size", type=_positive_int)
    run.add_argument("--lr", type=float)
    for split in ("train", "val", "test"):
        run.add_argument(f"--limit-{split}", type=_positive_int, help=f"use the first N images of the {split} split")
    run.add_argument("--device", help="auto (default), cpu or cuda[:N]")
    run.add_argument("--threads", type=_positive_int, help="torch CPU threads for training and timing")
    run.add_argument("--seed", type=int, help="one seed (overrides the config's seeds)")
    run.add_argument("--seeds", help="comma-separated seeds")
    run.add_argument("--study", help="study name (folder under results/ and reports/)")
    run.add_argument("--results-dir", default="results")
    run.add_argument("--reports-dir", default="reports")
    run.add_argument("--pretrained", action="store_true", help="start baselines from pretrained weights (needs internet)")
    run.add_argument("--checkpoint", help="initial weights for every model in the study (one model only)")
    run.add_argument("--compress", action="append", metavar="SPEC",
                     help="a compression variant (repeatable), e.g. svd:rank_ratio=0.5 or "
                          "prune:pruning_ratio=0.5,importance=l2 or tucker2:rank_ratio=0.5+svd:energy=0.9,rank_selection=energy; "
                          "replaces the config's compressions for every model")
    run.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs after compression (0: none)")
    run.add_argument("--norm-lambda", type=float, help="weight of the factor-norm penalty while fine-tuning (LWALM)")
    run.add_argument("--no-latency", action="store_true", help="skip latency timing")
    run.add_argument("--runtimes", help="comma-separated runtimes to time (default: all; see `run_bench.py models`)")
    run.add_argument("--batch-n", type=_positive_int, help="the batch size timed beside batch 1")
    run.add_argument("--no-plots", action="store_true")
    run.add_argument("--force", action="store_true", help="recompute cells that already have results (and time the study again)")
    run.add_argument("--retime", action="store_true", help="time the study again even when no cell changed")
    run.add_argument("--executor", choices=("sequential", "ray"), help="run cells here one by one (default), or as Ray tasks")
    run.add_argument("--ray-address", help="join the Ray cluster at HOST:PORT (or 'auto'); default: start a local one")
    run.add_argument("--cpus-per-cell", type=_positive_int, help="CPUs each Ray task asks for (default 1)")
    run.add_argument("--mlflow", metavar="URI", help="log every cell as an MLflow run at this tracking URI (pip install -e \".[mlflow]\")")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def config_from_args(args) -> dict:
    """Return the study config: the YAML file, then command-line overrides."""
    from bench.config import StudyConfigError, load_config, validate_config

    config = load_config(args.config)
    data = config["data"]
    if args.data_dir:
        data["data_dir"] = os.path.expanduser(args.data_dir)
    if args.synthetic_images:
        data["synthetic_images"] = args.synthetic_images
    for split in ("train", "val", "test"):
        if getattr(args, f"limit_{split}"):
            data[f"limit_{split}"] = getattr(args, f"limit_{split}")
    if args.models:
        # A name the config already lists keeps its entry (kwargs, compressions, training); others come with defaults.
        entries = {(m["name"] if isinstance(m, dict) else m): m for m in config["models"]}
        config["models"] = [entries.get(name, name) for name in (m.strip() for m in args.models.split(",")) if name]
    train = config["train"]
    for key in ("epochs", "batch_size", "lr"):
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
            # a per-model override in the YAML would silently beat the flag: the flag wins everywhere
            config["models"] = [_drop_train_key(m, key) for m in config["models"]]
    if args.compress:
        config["compressions"] = list(args.compress)
        config["models"] = [{k: v for k, v in m.items() if k != "compressions"} if isinstance(m, dict) else m
                            for m in config["models"]]
    if args.finetune_epochs is not None:
        config["finetune"]["epochs"] = args.finetune_epochs
    if args.norm_lambda is not None:
        config["finetune"]["norm_lambda"] = args.norm_lambda
    if args.device:
        config["device"] = args.device
    if args.threads:
        config["threads"] = args.threads
        config["profile"]["threads"] = args.threads
    if args.seeds:
        try:
            config["seeds"] = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise StudyConfigError(f"--seeds: expected comma-separated integers, e.g. 0,1,2; got {args.seeds!r}") from None
    if args.seed is not None:
        config["seeds"] = [args.seed]
    if args.study:
        config["study"] = args.study
    if args.no_latency:
        config["profile"]["latency"] = False
    if args.runtimes:
        config["profile"]["runtimes"] = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if args.batch_n:
        config["profile"]["batch_n"] = args.batch_n
    if args.executor:
        config["executor"] = args.executor
    if args.mlflow:
        config["mlflow"] = args.mlflow
    if args.ray_address:
        config["executor"], config["ray"]["address"] = "ray", args.ray_address
    if args.cpus_per_cell:
        config["ray"]["cpus_per_cell"] = args.cpus_per_cell
    if args.pretrained or args.checkpoint:
        if args.checkpoint and len(config["models"]) != 1:
            raise StudyConfigError("--checkpoint needs exactly one model (--models NAME)")
        config["models"] = [
            {**(m if isinstance(m, dict) else {"name": m}), "pretrained": args.pretrained, "checkpoint": args.checkpoint}
            for m in config["models"]
        ]
    if getattr(args, "command", None) == "search":
        search = dict(config["search"] or {})
        for key, value in (("trials", args.trials), ("promote", args.promote), ("sampler", args.sampler), ("runtime", args.search_runtime)):
            if value is not None:
                search[key] = value
        config["search"] = search
    validate_config(config)  # flags are checked as the YAML is: a bad value stops here, before the first cell
    return config


def _drop_train_key(entry, key):
    if isinstance(entry, dict) and key in entry.get("train", {}):
        entry = {**entry, "train": {k: v for k, v in entry["train"].items() if k != key}}
    return entry


def command_models() -> int:
    import models

    rows = models.list_models(with_descriptions=True)
    width = max(len(name) for name, _, _ in rows)
    for name, family, description in rows:
        print(f"{name:<{width}}  {family:<11}  {description}")
    import compress

    print("\ncompression methods (--compress METHOD:opt=value,...):")
    for name, description in compress.list_methods(with_descriptions=True):
        print(f"  {name:<9} {description}")
    import deploy

    print("\nruntimes (--runtimes NAME,...):")
    for name, entry in deploy.RUNTIMES.items():
        reason = deploy.unavailable_reason(name)
        print(f"  {name:<17} {entry.description}" + (f"  [unavailable: {reason}]" if reason else ""))
    return 0


def command_profile(args) -> int:
    import numpy as np
    import torch

    import deploy
    import models
    from bench.profile import build_runtimes, count_macs, latency_row, resolve_runtimes, time_runtimes
    from deploy import torch_threads

    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"--batch-sizes: expected comma-separated integers >= 1, e.g. 1,32; got {args.batch_sizes!r}")
    runtimes = resolve_runtimes([r.strip() for r in args.runtimes.split(",")] if args.runtimes != "all" else "all")
    with torch_threads(args.threads):
        threads = torch.get_num_threads()
        machine = deploy.peak_gflops(threads)
        probe = deploy.LoadProbe(threads)  # the memory-bound probe is the study's timing phase's (bench.latency)
        per_library = ", ".join(f"{k} {v:.0f}" for k, v in machine["per_library"].items())
        print(f"torch {torch.__version__}, {threads} threads; fp32 peak {machine['peak_gflops']:.0f} GFLOP/s "
              f"({machine['peak_library']} GEMM; {per_library}); {args.repeats} interleaved blocks of >= {args.min_iters} calls "
              f"and >= {args.min_seconds} s per runtime")
        print("| model | GMACs | runtime | batch | median (ms) | p10-p90 (ms) | spread over reruns | floor (ms) | measured / floor | busy |")
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            kwargs = {} if args.input_size == "native" else {"input_size": [int(v) for v in args.input_size.lower().split("x")]}
            model = models.create_model(name, **kwargs).eval()
            size = model.data_config["input_size"]
            macs = count_macs(model, size)
            example = np.random.default_rng(0).standard_normal((2, *size)).astype(np.float32)
            calibration = np.random.default_rng(1).standard_normal((16, *size)).astype(np.float32)
            deployed, skipped = build_runtimes(model, runtimes, example, threads, calibration=calibration,
                                               int8=deploy.Int8Settings(calibration_images=len(calibration)))
            for runtime, reason in skipped.items():
                print(f"| {name} | {macs / 1e9:.3f} | {runtime} | | skipped: {reason} | | | | | |")
            timings = time_runtimes({name: deployed}, size, batch_sizes, probe, args.repeats, args.min_iters, args.min_seconds)
            for batch in batch_sizes:
                for runtime, built in deployed.items():
                    row = latency_row(timings[(name, runtime, batch)], runtime, batch, built, macs, threads, machine["peak_gflops"], args.repeats)
                    print(f"| {name} | {macs / 1e9:.3f} | {runtime} | {batch} | {row['median_ms']:.2f} | {row['p10_ms']:.2f}-{row['p90_ms']:.2f} "
                          f"| {row['spread_pct']:.1f} % | {row['floor_ms']:.2f} | {row['floor_ratio']:.2f}x | {'yes' if row['busy'] else ''} |", flush=True)
    return 0


def command_sensitivity(args) -> int:
    import pandas as pd
    from tqdm.auto import tqdm

    import models
    from bench.config import load_config
    from bench.data import load_data
    from bench.report import render_sensitivity
    from bench.schema import SENSITIVITY_ATTRIBUTE_COLUMNS, SENSITIVITY_COLUMNS, write_csv_atomic
    from bench.sensitivity import sensitivity

    data_config = load_config(args.config)["data"]
    if args.data_dir:
        data_config["data_dir"] = os.path.expanduser(args.data_dir)
    progress = None if args.quiet else (lambda total=None, desc=None: tqdm(total=total, desc=desc, leave=False, disable=None))
    model = models.load_model(args.checkpoint)
    data = load_data(data_config, progress)
    print(f"sensitivity of {args.checkpoint} ({model.arch['name']}) on {data.name} ({data.source}), {args.split} split", flush=True)
    units, attributes = sensitivity(model, data, args.method, args.ratio, args.split, progress=progress)
    checkpoint = os.path.abspath(args.checkpoint)
    provenance = {"checkpoint": checkpoint, "data": f"{data.name} {data.fingerprint}"}
    units = [{**row, **provenance} for row in units]
    attributes = [{**row, **provenance} for row in attributes]
    # named by checkpoint too: a second checkpoint's analysis must not replace the first's
    tag = f"{os.path.basename(os.path.dirname(checkpoint))}-{os.path.splitext(os.path.basename(checkpoint))[0]}"
    name = f"sensitivity_{tag}_{args.method}_{args.ratio:g}"
    folder = os.path.join(args.results_dir, args.study)
    write_csv_atomic(os.path.join(folder, f"{name}.csv"), SENSITIVITY_COLUMNS, units)
    write_csv_atomic(os.path.join(folder, f"{name}_attributes.csv"), SENSITIVITY_ATTRIBUTE_COLUMNS, attributes)
    written = render_sensitivity(pd.DataFrame(units), pd.DataFrame(attributes), os.path.join(args.reports_dir, args.study), name,
                                 plots=not args.no_plots)
    print(open(written[f"{name}.md"], encoding="utf-8").read())
    print(f"results: {folder}/{name}.csv, {name}_attributes.csv; reports: {os.path.join(args.reports_dir, args.study)}/")
    return 0


def command_report(args) -> int:
    from bench.report import render_report

    written = render_report(args.results_dir, args.study, args.reports_dir, plots=not args.no_plots)
    summary = written.get("summary.md")
    if summary:
        print(open(summary, encoding="utf-8").read())
    print(f"reports written to {os.path.join(args.reports_dir, args.study)}/ ({len(written)} files)")
    return 0


def command_run(args) -> int:
    from tqdm.auto import tqdm

    from bench.config import expand_cells
    from bench.report import render_report
    from bench.study import make_executor, run_study

    from bench.files import check_writable

    config = config_from_args(args)
    cells = expand_cells(config)
    check_writable(os.path.join(args.reports_dir, config["study"]), "reports folder", "--reports-dir")  # now, not after every cell
    started = time.perf_counter()
    progress = None if args.quiet else (lambda total=None, desc=None: tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True, disable=None))

    from bench.labels import display_label

    def on_event(kind: str, cell: dict) -> None:
        label = f"{display_label(cell['model'], cell.get('variant'))} seed {cell['seed']}" if "model" in cell else ""
        if kind == "skip":
            print(f"= {label}: cached result, skipped (use --force to recompute)", flush=True)
        elif kind == "start":
            print(f"> {label}", flush=True)
        elif kind == "timing":
            print(f"> timing phase: {cell['cells']} models, every runtime, in one fresh process", flush=True)
        elif kind == "timed":
            parts = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in cell["seconds_by_part"].items())
            print(f"  timed in {cell['seconds']:.0f} s ({parts}); fp32 peak {cell['machine']['peak_gflops']:.0f} GFLOP/s "
                  f"({cell['machine']['peak_library']})", flush=True)
            for line in cell.get("unresolved", []):
                print(f"  warning: ratio not known to +-{cell['settings']['ratio_tolerance_pct']:g} %: {line}", flush=True)
            for key, skipped in sorted(cell.get("skipped", {}).items()):
                for runtime, reason in sorted(skipped.items()):
                    print(f"  not measured in {runtime} ({key}): {reason}", flush=True)
        elif kind == "wait":
            print(f"~ {label}: another run of this study is computing it; waiting for its result", flush=True)
        elif kind == "done":
            row = cell["row"]
            if row.get("compression"):
                timing = f", no fine-tune {float(row['acc_mean_nofinetune']):.2f} %, fine-tuned {float(row['finetune_seconds'] or 0):.0f} s"
            elif row.get("train_seconds") != "":
                timing = f", trained {float(row['train_seconds']):.0f} s"
            else:
                timing = ""
            print(f"  done: acc_mean {float(row['acc_mean']):.2f} %, {row['params']} params{timing}", flush=True)
            if row.get("diverged"):
                print(f"  warning: training diverged: {row['diverged']}", flush=True)
        elif kind == "trial":
            ratio = f"{float(cell['latency_ratio']):.2f}x the searched model's latency" if cell["latency_ratio"] != "" else cell["error"]
            accuracy = f"val acc {float(cell['acc_mean_val']):.2f} %, " if cell["acc_mean_val"] != "" else ""
            print(f"  trial {cell['trial']} {cell['state'].lower()}: {cell['variant']}: {accuracy}{ratio}", flush=True)
        elif kind == "promote":
            print(f"> search: {cell['cells']} front members promoted to the study's fine-tune", flush=True)

    print(f"study {config['study']!r}: {len(cells)} cells, data: "
          + (config["data"]["data_dir"] or f"synthetic ({config['data']['synthetic_images']} images)"), flush=True)

    if config["search"] is not None:
        from bench.search import run_search

        if args.force:
            from bench.config import StudyConfigError

            raise StudyConfigError("--force does not apply to a search; remove its folder (results/<study>/search) to start over")
        from bench.config import reference_model, search_settings

        search = search_settings(config)
        print(f"search: {search.trials} trials over compressions of {search.model or reference_model(config)} ({search.sampler}), "
              f"latency in {search.runtime} at batch {search.batch}; a killed search resumes where it stopped", flush=True)
        run_search(config, args.results_dir, executor=make_executor(config), progress=progress, on_event=on_event, retime=args.retime)
    else:
        run_study(config, args.results_dir, force=args.force, executor=make_executor(config), progress=progress, on_event=on_event,
                  retime=args.retime)
    written = render_report(args.results_dir, config["study"], args.reports_dir, plots=not args.no_plots)
    print()
    print(open(written["summary.md"], encoding="utf-8").read())
    print(f"results: {os.path.join(args.results_dir, config['study'])}/results.csv")
    print(f"reports: {os.path.join(args.reports_dir, config['study'])}/ ({len(written)} files)")
    if "search.md" in written:
        print(f"search: {written['search.md']} (front, dominance over the zoo, every trial)")
    if config["mlflow"]:
        from bench.schema import load_records
        from bench.tracking import log_study

        runs = log_study(config["mlflow"], config["study"], load_records(args.results_dir, config["study"]),
                         os.path.join(args.reports_dir, config["study"]))
        print(f"mlflow: {len(runs)} cell runs in experiment {config['study']!r} at {config['mlflow']}")
    print(f"wall time: {time.perf_counter() - started:.0f} s")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["run"] + argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from deploy.timing import steady_allocator

    steady_allocator()  # eager PyTorch's speed (training too) otherwise depends on what the process freed before
    try:
        if args.command == "models":
            return command_models()
        if args.command == "report":
            return command_report(args)
        if args.command == "profile":
            return command_profile(args)
        if args.command == "sensitivity":
            return command_sensitivity(args)
        return command_run(args)  # run and search
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
