"""The environment fingerprint stored with every result row: versions, CPU and its instruction sets, threads, commit, time."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

import torch

from deploy import isa_text


def environment() -> dict:
    """Return the environment fingerprint stored with every row (versions, CPU and its instruction sets, threads, git commit)."""
    import timm

    cpu_name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu_name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu_name)
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    import importlib.metadata

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return ""

    return {
        "torch_version": torch.__version__,
        "onnxruntime_version": version("onnxruntime"),
        "openvino_version": version("openvino"),
        "timm_version": timm.__version__,
        "cpu_name": cpu_name,
        "cpu_isa": isa_text(),
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds"),
    }
