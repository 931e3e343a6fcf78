"""Pieces shared by every training loop: per-step RNG, resumable state, metrics log, progress.

Exact resume rests on one rule: all randomness of step s comes from ``step_generator(seed, s)``
and the data order of step s is a pure function of (seed, s). A checkpoint then needs only the
step and the state dicts (model, optimizer, scheduler, EMA) to continue bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from tqdm import tqdm

from heptapod.utils.io import CheckpointError, atomic_path, load_checkpoint, save_checkpoint


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def progress(total: int, initial: int = 0, desc: str = "", unit: str = "it") -> tqdm:
    """A progress bar (with its rate in ``unit``/s); when stderr is not a terminal (logs, CI) it
    prints every 30 s only."""
    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=True,
                mininterval=0.5 if tty else 30.0, disable=os.environ.get("HEPTAPOD_NO_PROGRESS") == "1")


def check_finite(loss: torch.Tensor, step: int, where: str) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{where}: non-finite loss ({loss.item()}) at step {step}; stopping")


class StaleCheckpoint(CheckpointError):
    """A resumable state written with other parameters than the run's."""


class Resumable:
    """Periodic atomic checkpoints of a training loop's state, and their reload."""

    def __init__(self, path: str | Path, kind: str, fingerprint: str):
        self.path = Path(path)
        self.kind = kind
        self.fingerprint = fingerprint  # the params the state was trained with

    def load(self, objects: dict[str, Any]) -> int:
        """Restore ``objects`` (anything with load_state_dict) and return the next step."""
        if not self.path.exists():
            return 0
        ckpt = load_checkpoint(self.path, self.kind)
        if ckpt.get("fingerprint") != self.fingerprint:
            raise StaleCheckpoint(
                f"checkpoint {self.path} was written with other parameters; delete it to start over"
            )
        for name, obj in objects.items():
            obj.load_state_dict(ckpt["state"][name])
        return int(ckpt["step"])

    def save(self, step: int, objects: dict[str, Any]) -> None:
        save_checkpoint(self.path, {
            "kind": self.kind, "step": step, "fingerprint": self.fingerprint,
            "state": {name: obj.state_dict() for name, obj in objects.items()},
        })


def running_log(path: str | Path) -> Path:
    """Where the log of a run that is still training grows: ``<name>.running.jsonl`` beside ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.running{path.suffix}")


def log_lines(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Each line of a JSON-lines log with its record, up to a torn last line of a killed run."""
    for line in Path(path).read_text().splitlines():
        try:
            yield line, json.loads(line)
        except json.JSONDecodeError:
            return


def log_lines_up_to(path: str | Path, step: int) -> Iterator[tuple[str, dict]]:
    """A training log's lines (and records) up to ``step``: what a state saved at that step has
    trained (the log ends at its first line without a step)."""
    for line, record in log_lines(path):
        if "step" not in record:
            return
        if record["step"] <= step:
            yield line, record


class MetricsLog:
    """JSON-lines metrics log. While the run trains it grows in ``<name>.running.jsonl``, which
    is not an output of the training job: Snakemake and DVC remove a job's outputs before they
    rerun it, and a resumed run must keep its history. ``publish`` writes the whole log to
    ``path`` when the run ends. On resume, lines past the resumed step are dropped."""

    def __init__(self, path: str | Path, resume_step: int):
        self.path = Path(path)
        self.running = running_log(self.path)
        self.elapsed0 = 0.0  # wall seconds of earlier sessions of this run
        lines = []
        source = self.running if self.running.exists() else self.path  # the latter: older runs
        if resume_step > 0 and source.exists():
            for line, record in log_lines_up_to(source, resume_step):
                lines.append(line)
                self.elapsed0 = record.get("elapsed_s", self.elapsed0)
        with atomic_path(self.running) as tmp:
            tmp.write_text("".join(line + "\n" for line in lines))

    def write(self, record: dict) -> None:
        with self.running.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def publish(self) -> None:
        """The finished run's log at ``path``, written atomically."""
        with atomic_path(self.path) as tmp:
            shutil.copyfile(self.running, tmp)


def read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing metrics log: {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def lr_at(step: int, peak: float, warmup: int, total: int, schedule: str) -> float:
    """Linear warm-up, then constant or cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        progress_ = (step - warmup) / max(1, total - warmup)
        return 0.5 * peak * (1 + math.cos(math.pi * min(progress_, 1.0)))
    raise ValueError(f"train.lr_schedule: unknown schedule '{schedule}' (known: cosine, constant)")


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v, 1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, state: dict) -> None:
        # checkpoints load on the CPU; keep the shadow on the model's device
        self.shadow = {k: v.to(self.shadow[k].device).clone() for k, v in state.items()}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel (``module``) and torch.compile (``_orig_mod``)."""
    for attr in ("_orig_mod", "module", "_orig_mod"):  # compile(DDP(m)) or DDP(compile(m))
        inner = getattr(model, attr, None)
        if isinstance(inner, torch.nn.Module):
            model = inner
    return model


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decayed and not. A model that declares ``no_weight_decay()`` (full parameter
    names) decides itself; otherwise every parameter with fewer than 2 dimensions is undecayed."""
    model = unwrap(model)  # wrappers prefix the names ("module.", "_orig_mod.")
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else None
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        undecayed = name in skip if skip is not None else p.ndim < 2
        (no_decay if undecayed else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def batches(n: int, size: int) -> Iterable[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(lo + size, n))
