"""Multi-label training and evaluation: BCE-with-logits, Adam, best/last checkpoints, resume.

Library code: nothing here prints. Progress goes to an optional ``progress`` factory with tqdm's
interface (``bench.progress``), which the CLI supplies.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from torch import nn

import deploy
from bench.data.loading import FaceAttributeData, batch_rows, iterate_batches, to_model_input
from bench.data.synthetic import default_cache_dir
from bench.metrics import per_attribute_accuracy
from bench.progress import null_progress
from bench.settings import TrainSettings
from bench.store.files import write_atomically
from bench.training.setups import TrainingSetup, training_setup
from bench.training.teacher import SoftTargets
from models import checkpoint_header

_logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What training returns: per-epoch history, the best epoch (by val acc_mean), wall time and the training set-up
    (``bench.training.setups.TrainingSetup.describe``)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_acc: float = float("nan")
    train_seconds: float = 0.0
    setup: str = ""
    # the best epoch's validation logits, which the model holds at the end: its evaluation need not compute them again
    # (None after a resume that trained no epoch)
    best_val_logits: np.ndarray | None = None


def resolve_device(device: str) -> torch.device:
    """Return the torch device for 'auto' (cuda when available, else cpu) or an explicit name.

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here")
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Return the classifier's parameters (see :func:`models.classifier_of`).

    Raises:
        ValueError: the model exposes no recognisable classifier.
    """
    from models import classifier_of

    head = classifier_of(model)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no get_classifier(), fc or classifier to keep trainable")
    return list(head.parameters())


def _set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    head = {id(p) for p in head_parameters(model)}
    for parameter in model.parameters():
        if parameter.is_floating_point():  # fake quantization keeps integer bookkeeping (bit widths) as parameters
            parameter.requires_grad_(not frozen or id(parameter) in head)


class TrainingDivergedError(RuntimeError):
    """Training produced a NaN or infinite loss (the message names the epoch, step and learning rate)."""


# A final loss this many times the loss at the first step means training made the model worse than it started: the
# comparison is with the run's own start, so it holds for any loss (BCE, pos_weight, distillation's soft term).
DIVERGED_RATIO = 1.5
# Validation accuracy this many points under the majority predictor's, with a loss that never fell below its start.
MAJORITY_MARGIN = 5.0


def divergence_reason(history: list[dict], majority_val_acc: float | None = None) -> str:
    """Return why a finished training looks diverged ('' when it does not).

    Judged on what does not depend on the loss's scale: a validation loss that is not finite; a final
    train loss above ``DIVERGED_RATIO`` times the run's starting loss (the first step's, ``start_loss`` in the
    first epoch's history; else the first epoch's mean); or, after several epochs, a final validation
    accuracy more than ``MAJORITY_MARGIN`` points under the majority predictor's (``majority_val_acc``)
    while the loss never fell below its start (one epoch of a tiny run says too little to call it diverged).
    """
    if not history:
        return ""
    last = history[-1]
    if not math.isfinite(last.get("val_loss", 0.0)) or not math.isfinite(last["train_loss"]):
        return f"validation loss {last.get('val_loss')} at epoch {last['epoch']}"
    start = history[0].get("start_loss", history[0]["train_loss"])
    if math.isfinite(start) and last["train_loss"] > DIVERGED_RATIO * start:
        return (
            f"train loss rose from {start:.4g} at the start to {last['train_loss']:.4g} at epoch {last['epoch']}; "
            "lower the learning rate"
        )
    if (
        len(history) > 1
        and majority_val_acc is not None
        and last.get("val_acc") is not None
        and last["val_acc"] < majority_val_acc - MAJORITY_MARGIN
        and last["train_loss"] >= start
    ):
        return (
            f"validation accuracy {last['val_acc']:.2f} % is under the majority predictor's {majority_val_acc:.2f} % and the "
            f"train loss never fell below its start ({start:.4g}); lower the learning rate"
        )
    return ""


def predict_logits(
    model: nn.Module, data: FaceAttributeData, split: str, batch_size: int = 64, device: str = "auto", channels_last: bool = False
) -> np.ndarray:
    """Return the logits (N, A) of ``model`` on ``split``, in split order (model left in eval mode).

    The model is moved (device, memory format) before inference mode is entered: a conversion
    inside it would turn some parameters into inference tensors that training can no longer use.
    """
    device = resolve_device(device)
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    outputs = []
    with torch.inference_mode():
        for images, _ in iterate_batches(data, split, batch_size):
            x = to_model_input(images, model.data_config, device, channels_last)
            outputs.append(model(x).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, data.labels.shape[1]), np.float32)


def predict_probs(
    model: nn.Module, data: FaceAttributeData, split: str, batch_size: int = 64, device: str = "auto", channels_last: bool = False
) -> np.ndarray:
    """Return sigmoid probabilities (N, A) of ``model`` on ``split`` (see :func:`predict_logits`)."""
    return expit(predict_logits(model, data, split, batch_size, device, channels_last))


def recalibrate_batchnorm(
    model: nn.Module,
    data: FaceAttributeData,
    images: int,
    batch_size: int = 64,
    device: str = "auto",
    channels_last: bool = False,
) -> int:
    """Replace every BatchNorm layer's running statistics by their average over the first ``images`` training images
    (no gradient, no augmentation, weights unchanged) and return how many images were seen (0 when the model has no
    BatchNorm). The model is left in eval mode.

    Compression leaves BatchNorm's statistics those of the uncompressed model; re-estimating them is the fine-tune-free
    adaptation whose accuracy ranks pruned candidates as their fine-tuned accuracy does (EagleEye's adaptive BatchNorm).
    The statistics are averaged over batches of ``batch_size``: their own batch, not the evaluation's, whose size changes
    no logit.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or images <= 0:
        return 0
    device = resolve_device(device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: every batch counts alike
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch, _ in iterate_batches(data, "train", min(batch_size, images)):
                batch = batch[: images - seen]
                model(to_model_input(batch, model.data_config, device, channels_last))
                seen += len(batch)
                if seen >= images:
                    break
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()
    return seen


@dataclass
class _Training:
    """One training run of ``train_model``: the model, its optimizer and scheduler, the checkpoint files and the result."""

    model: nn.Module
    data: FaceAttributeData
    config: TrainSettings
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: object
    pos_weight: torch.Tensor | None
    last_path: str | None
    best_path: str | None
    setup: TrainingSetup
    result: TrainResult = field(default_factory=TrainResult)
    best_state: dict | None = None

    def resume(self) -> tuple[int, float]:
        """Load ``last.pt`` when there is one; return ``(first epoch to run, seconds already trained)``."""
        if not (self.last_path and os.path.isfile(self.last_path)):
            return 0, 0.0
        state = torch.load(self.last_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model_state_dict"])
        self.optimizer.load_state_dict(state["optimizer_state_dict"])
        if self.scheduler is not None and state.get("scheduler_state_dict"):
            self.scheduler.load_state_dict(state["scheduler_state_dict"])
        # A checkpoint cannot hold the time of its own writing: the last epoch's stays unknown.
        self.result.history = [{"checkpoint_seconds": float("nan"), **entry} for entry in state["history"]]
        self.result.best_epoch, self.result.best_val_acc = state["best_epoch"], state["best_val_acc"]
        _logger.info("resuming %s from epoch %d", self.last_path, state["epoch"] + 1)
        return state["epoch"] + 1, state["train_seconds"]

    def start_epoch(self, epoch: int) -> bool:
        """Freeze or unfreeze the backbone for ``epoch`` (the transfer protocol) and put the model in training mode;
        return whether only the head trains."""
        config = self.config
        frozen = epoch < config.freeze_backbone_epochs
        _set_backbone_frozen(self.model, frozen)
        if not frozen and config.unfreeze_lr is not None and epoch == config.freeze_backbone_epochs:
            for group in self.optimizer.param_groups:
                group["lr"] = config.unfreeze_lr
        self.model.train()
        return frozen

    def loss(
        self, y: torch.Tensor, logits: torch.Tensor, soft: torch.Tensor | None, distill: float, temperature: float, extra_loss
    ) -> torch.Tensor:
        """Return the batch's loss: BCE with logits, distilled towards the teacher's probabilities ``soft`` (at
        ``temperature``) when ``distill`` > 0, plus ``extra_loss``."""
        loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight)
        if soft is not None and distill > 0:
            soft_loss = F.binary_cross_entropy_with_logits(logits / temperature, soft) * temperature**2
            loss = (1.0 - distill) * loss + distill * soft_loss
        if extra_loss is not None:
            loss = loss + extra_loss(self.model)
        return loss

    def train_epoch(self, epoch: int, bar, teacher: SoftTargets | None, distill: float, temperature: float, extra_loss) -> dict:
        """Run one epoch of steps; return its ``train_loss``, ``train_acc``, the first step's loss (``start_loss``) and
        where its time went (``data_seconds``: batches read and converted; ``step_seconds``: forward, backward, update).

        Raises:
            TrainingDivergedError: the loss became NaN or infinite.
        """
        hooks = self.setup.apply(self.model)  # the set-up's fp32 layers, for this epoch's steps only
        try:
            return self._steps(epoch, bar, teacher, distill, temperature, extra_loss)
        finally:
            for hook in hooks:
                hook.remove()

    def _steps(self, epoch: int, bar, teacher: SoftTargets | None, distill: float, temperature: float, extra_loss) -> dict:
        config, data = self.config, self.data
        loss_sum, correct, seen, start_loss, data_seconds, step_seconds = 0.0, 0.0, 0, None, 0.0, 0.0
        flip_rng = np.random.default_rng([config.seed, epoch, 1])
        tick = time.perf_counter()
        for rows in batch_rows(data, "train", config.batch_size, shuffle=True, seed=config.seed * 100003 + epoch):
            flipped = config.hflip and bool(flip_rng.random() < 0.5)
            x = to_model_input(
                np.asarray(data.images[rows]), self.model.data_config, self.device, self.setup.channels_last, hflip=flipped
            )
            y = torch.from_numpy(data.labels[rows]).to(self.device)
            soft = teacher.probabilities(rows, flipped, temperature, self.device) if teacher is not None and distill > 0 else None
            now = time.perf_counter()
            data_seconds, tick = data_seconds + now - tick, now
            with self.setup.autocast(self.device):
                logits = self.model(x)
                loss = self.loss(y, logits.float(), soft, distill, temperature, extra_loss)
            loss_value = loss.item()
            start_loss = loss_value if start_loss is None else start_loss
            if not math.isfinite(loss_value):
                raise TrainingDivergedError(
                    f"loss became {loss_value} at epoch {epoch + 1} step {seen // config.batch_size + 1} "
                    f"(lr {self.optimizer.param_groups[0]['lr']:g}); lower the learning rate"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss_value * len(rows)
            correct += ((logits.detach() > 0).float() == y).float().sum().item()
            seen += len(rows)
            now = time.perf_counter()
            step_seconds, tick = step_seconds + now - tick, now
            bar.update(len(rows))
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / (seen * y.shape[1]):.2f}")
        return {
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": 100 * correct / max(seen * data.labels.shape[1], 1),
            "start_loss": start_loss,
            "data_seconds": data_seconds,
            "step_seconds": step_seconds,
        }

    def validate(self) -> tuple[float, float, np.ndarray]:
        """Return ``(val_loss, val_acc, val_logits)`` on the validation split (a NaN loss, not a crash, for NaN outputs)."""
        config, data = self.config, self.data
        val_logits = predict_logits(self.model, data, "val", config.eval_batch_size, str(self.device), self.setup.channels_last)
        val_probs = expit(val_logits)
        val_labels = data.labels[data.splits["val"]]
        finite = np.isfinite(val_probs).all()
        val_loss = (
            float(F.binary_cross_entropy(torch.from_numpy(val_probs).clamp(1e-7, 1 - 1e-7), torch.from_numpy(val_labels)))
            if finite
            else float("nan")
        )  # NaN outputs with a finite loss: reported as divergence, not a crash
        return val_loss, float(per_attribute_accuracy(val_labels, val_probs).mean()), val_logits

    def save(self, epoch: int, improved: bool, header: dict, seconds: float) -> None:
        """Write ``best.pt`` (when ``improved``) and ``last.pt`` atomically (nothing without a checkpoint folder)."""
        if not self.last_path:
            return
        common = {**header, "train_config": asdict(self.config), "history": self.result.history}
        if improved:
            write_atomically(
                self.best_path,
                lambda partial: torch.save({**common, "model_state_dict": self.model.state_dict(), "epoch": epoch}, partial),
            )
        last_state = {
            **common,
            "model_state_dict": self.model.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": epoch,
            "best_epoch": self.result.best_epoch,
            "best_val_acc": self.result.best_val_acc,
            "train_seconds": seconds,
        }
        write_atomically(self.last_path, lambda partial: torch.save(last_state, partial))

    def finish(self) -> None:
        """Leave the model trainable and holding the best epoch's weights (from memory, or from ``best.pt`` after a resume)."""
        _set_backbone_frozen(self.model, False)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        elif self.best_path and os.path.isfile(self.best_path) and self.result.history:
            # Resumed after the last epoch had finished: the best weights are only on disk.
            self.model.load_state_dict(
                torch.load(self.best_path, map_location=self.device, weights_only=True)["model_state_dict"]
            )


def _start(model: nn.Module, data: FaceAttributeData, config: TrainSettings, checkpoint_dir: str | None) -> _Training:
    """Return a training run set up on its device: its set-up (memory format, precision, compilation), Adam, StepLR,
    positive weights."""
    for split in ("train", "val"):
        if len(data.splits[split]) == 0:
            raise ValueError(f"the {split} split of {data.name!r} is empty; check the partition file or --limit-{split}")
    device = resolve_device(config.device)
    deploy.steady_allocator()  # left dynamic, glibc's thresholds made the same steps 1.4x slower (14.0 vs 19.5 ms per image)
    setup = training_setup(
        model, config.batch_size, config.channels_last, config.precision, config.compile, device, default_cache_dir()
    )
    seed_everything(config.seed)
    model.to(device)
    if setup.channels_last:
        model.to(memory_format=torch.channels_last)
    if setup.compiled:
        model.compile()  # in place: the state dict keeps its keys
    # Not fused: Adam's fused kernel steps Slim-Net 3x faster (1.6 vs 5.1 ms, about 3 s of a study on machine D), but its
    # rounding, like another seed, moved the default study's one-seed Slim-Net from 88.43 to 87.94 % (search run, same
    # machine): the studies' reported numbers are kept for 1 % of their time.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma)
        if config.lr_step_epochs > 0
        else None
    )
    pos_weight = None
    if config.pos_weight:
        positives = data.labels[data.splits["train"]].mean(axis=0).clip(1e-3, 1 - 1e-3)
        pos_weight = torch.tensor((1 - positives) / positives, dtype=torch.float32, device=device)
    paths = [os.path.join(checkpoint_dir, name) if checkpoint_dir else None for name in ("last.pt", "best.pt")]
    return _Training(model, data, config, device, optimizer, scheduler, pos_weight, *paths, setup)


def train_model(
    model: nn.Module,
    data: FaceAttributeData,
    config: TrainSettings,
    checkpoint_dir: str | None = None,
    progress=None,
    extra_loss=None,
    teacher: SoftTargets | None = None,
    distill: float = 0.0,
    temperature: float = 1.0,
) -> TrainResult:
    """Train ``model`` in place on ``data``'s train split, validating each epoch.

    The steps run in the training set-up ``config`` asks for (``bench.training.setups``: channels_last, bf16 autocast where
    it is native, compilation); validation runs in fp32. With ``checkpoint_dir``, ``last.pt`` (everything needed to
    resume) and ``best.pt`` (best validation ``acc_mean``) are written atomically after each epoch, and an existing
    ``last.pt`` is resumed from. Both store ``arch`` so :func:`models.load_model` rebuilds the model from the file alone.
    At the end the model holds the best epoch's weights. ``extra_loss(model)``, if given, is added to the BCE loss (e.g.
    a norm penalty for fine-tuning compressed layers). With a ``teacher`` (its outputs on every training image,
    ``bench.training.teacher.soft_targets``) and ``distill`` = alpha > 0 the loss is knowledge distillation per
    attribute: (1 - alpha) * BCE(logits, labels) + alpha * T^2 * BCE(logits / T, sigmoid(teacher logits / T)),
    T = ``temperature`` (the T^2 keeps the soft term's gradients on the hard term's scale).

    Returns:
        TrainResult with the set-up and one history dict per epoch (``epoch, lr, train_loss, train_acc, val_loss,
        val_acc, seconds``, and where they went: ``data_seconds``, ``step_seconds``, ``val_seconds``,
        ``checkpoint_seconds``).
    Raises:
        ValueError: empty train or val split, or bad config values.
        TrainingDivergedError: the loss became NaN or infinite (the epoch and step named).
    """
    progress = progress or null_progress
    run = _start(model, data, config, checkpoint_dir)
    run.result.setup = run.setup.describe()
    start_epoch, elapsed_before = run.resume()
    started = time.perf_counter()
    header = checkpoint_header(model) if checkpoint_dir and getattr(model, "arch", None) else {"arch": None}
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        frozen = run.start_epoch(epoch)
        desc = f"epoch {epoch + 1}/{config.epochs}" + (" (head only)" if frozen else "")
        bar = progress(total=len(data.splits["train"]), desc=desc)
        steps = run.train_epoch(epoch, bar, teacher, distill, temperature, extra_loss)
        bar.close()
        if run.scheduler is not None:
            run.scheduler.step()
        validated = time.perf_counter()
        val_loss, val_acc, val_logits = run.validate()
        start_loss = steps.pop("start_loss")
        entry = {
            "epoch": epoch + 1,
            "lr": run.optimizer.param_groups[0]["lr"],
            "train_loss": steps["train_loss"],
            "train_acc": steps["train_acc"],
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": time.perf_counter() - epoch_start,  # a checkpoint holds this (its own writing comes after)
            "data_seconds": steps["data_seconds"],
            "step_seconds": steps["step_seconds"],
            "val_seconds": time.perf_counter() - validated,
            **({"start_loss": start_loss} if epoch == 0 else {}),
        }
        run.result.history.append(entry)
        improved = not (val_acc <= run.result.best_val_acc)  # NaN-safe: the first epoch always counts
        if improved:
            run.result.best_epoch, run.result.best_val_acc = epoch + 1, val_acc
            run.result.best_val_logits = None if run.setup.compiled else val_logits  # a compiled model's logits may differ
            run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saving = time.perf_counter()
        run.save(epoch, improved, header, elapsed_before + saving - started)
        entry["checkpoint_seconds"] = time.perf_counter() - saving
        entry["seconds"] += entry["checkpoint_seconds"]
        _logger.info("epoch %d: %s", epoch + 1, entry)
    run.finish()
    run.result.train_seconds = elapsed_before + time.perf_counter() - started
    return run.result
