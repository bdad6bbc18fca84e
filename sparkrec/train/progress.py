"""Rank 0's progress lines: epoch, step, loss, samples/s and ETA, printed every N steps."""
from __future__ import annotations

import sys
import time

import torch


class Progress:
    """Prints to stderr on the main rank only; reading the loss (a device sync) happens only when
    a line is printed."""

    def __init__(self, enabled: bool, every: int):
        self.enabled, self.every = enabled, every
        self.epochs = self.steps_per_epoch = self.first_epoch = 0
        self.started = time.perf_counter()
        self.samples = 0

    def info(self, message: str) -> None:
        if self.enabled:
            print(f"[train] {message}", file=sys.stderr, flush=True)

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        self.epochs, self.steps_per_epoch, self.first_epoch = epochs, steps_per_epoch, first_epoch
        self.started, self.samples = time.perf_counter(), 0
        self.info(f"{epochs - first_epoch} epochs x {steps_per_epoch} steps to go")

    def step(self, epoch: int, step: int, loss_sum: torch.Tensor, rows: int, samples_this_step: int) -> None:
        """Count ``samples_this_step`` (all ranks' positives) and print every ``every`` steps."""
        self.samples += samples_this_step
        if not self.enabled or (step + 1) % self.every:
            return
        elapsed = time.perf_counter() - self.started
        done = (epoch - self.first_epoch) * self.steps_per_epoch + step + 1
        left = (self.epochs - self.first_epoch) * self.steps_per_epoch - done
        self.info(f"epoch {epoch + 1}/{self.epochs} step {step + 1}/{self.steps_per_epoch} "
                  f"loss {loss_sum.item() / max(1, rows):.4f} {self.samples / elapsed:,.0f} samples/s "
                  f"ETA {elapsed / done * left:,.0f}s")

    def epoch(self, record: dict, metric: str | None, best_epoch: int) -> None:
        shown = {k: round(v, 4) for k, v in record.items() if k.startswith("val_") or k == "train_loss"}
        self.info(f"epoch {record['epoch']}/{self.epochs} done in {record['seconds']:.1f}s "
                  f"({record['samples_per_s']:,.0f} samples/s): {shown}; best epoch {best_epoch}"
                  + (f" by {metric}" if metric else ""))
