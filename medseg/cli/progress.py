"""Rich progress for training epochs (a bar with loss, throughput and ETA), or plain log lines."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class InterruptAdvice:
    """What Ctrl-C should tell the user (`cli.app`); a command replaces the default once it knows better."""

    text = "outputs written so far are complete; re-run to resume"


class RichTrainingHooks:
    """One bar per epoch (`enabled`, on a terminal only); a one-line summary per epoch (val Dice when validated)
    unless `quiet` (torchrun ranks other than 0). `resumable`: the command takes `--resume` (not `medseg demo`), so
    Ctrl-C names it once a checkpoint exists. Lines are never wrapped: a redirected log keeps one line per
    epoch for grep, without the blank line a stopped bar leaves outside a terminal."""

    def __init__(self, console: Console, enabled: bool = True, quiet: bool = False, resumable: bool = True) -> None:
        self.console = console
        self.resumable = resumable
        self._resume = ""
        self.enabled = enabled and not quiet and console.is_terminal
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task = None

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, loss=float("nan"))

    def step(self, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=loss)

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.resumable and self._resume:  # once the epoch's last.pt is written; rank 0 only (run_started)
            InterruptAdvice.text = self._resume
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.quiet:
            return
        parts = [
            f"epoch {epoch + 1}",
            f"loss {metrics['train_loss']:.4f}",
            f"{metrics['train_samples_per_s']:.1f} samples/s",
            f"{metrics['epoch_time_s']:.1f}s",
        ]
        if "val_dice_mean" in metrics:
            dices = " ".join(
                f"{k.removeprefix('val_dice_').upper()} {v:.3f}"
                for k, v in metrics.items()
                if k.startswith("val_dice_")
            )
            parts.append(f"[bold]val Dice {dices}[/]")
        self.console.print("  ".join(parts), highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{escape(text)}[/]", highlight=False, soft_wrap=True)

    def run_started(self, run_id: str | None, out_dir: Path) -> None:
        """Name the run where the log starts, and make Ctrl-C say how to continue it (`resumable` commands): with
        `--resume` once the run has a checkpoint, else by starting again."""
        self._resume = (
            f"the run continues from its last epoch with the same command and --resume {run_id or out_dir / 'last.pt'}"
        )
        if self.resumable:
            checkpointed = (out_dir / "last.pt").exists()
            InterruptAdvice.text = (
                self._resume if checkpointed else "the run stopped before writing a checkpoint: re-run the same command"
            )
        self.message(f"run {run_id or '(not tracked)'}: checkpoints in {out_dir}")
