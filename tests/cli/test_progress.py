"""Training log lines: one line per epoch in a redirected log, bars only on a terminal."""

import io
from pathlib import Path

from rich.console import Console

from medseg.cli.progress import RichTrainingHooks

RUN_ID = "c410715b016743939618022852d6f9b6"
METRICS = {
    "train_loss": 0.5,
    "train_samples_per_s": 3.0,
    "epoch_time_s": 2.0,
    "val_dice_et": 0.91,
    "val_dice_tc": 0.92,
    "val_dice_wt": 0.93,
    "val_dice_mean": 0.92,
}


def _log_of_two_epochs(console: Console) -> str:
    hooks = RichTrainingHooks(console)
    hooks.run_started(RUN_ID, Path("medseg_demo/runs") / RUN_ID)
    for epoch in range(2):
        hooks.epoch_start(epoch, 2, steps=3)
        for _ in range(3):
            hooks.step(0.5)
        hooks.epoch_end(epoch, METRICS)
    return console.file.getvalue()


def test_redirected_log_has_one_unwrapped_line_per_epoch():
    log = _log_of_two_epochs(Console(file=io.StringIO(), width=80))
    lines = log.splitlines()
    assert lines[0] == f"run {RUN_ID}: checkpoints in medseg_demo/runs/{RUN_ID}"
    assert lines[1:] == [
        f"epoch {e}  loss 0.5000  3.0 samples/s  2.0s  val Dice ET 0.910 TC 0.920 WT 0.930 MEAN 0.920" for e in (1, 2)
    ]


def test_terminal_shows_a_bar_while_the_epoch_runs():
    console = Console(file=io.StringIO(), width=120, force_terminal=True)
    hooks = RichTrainingHooks(console)
    hooks.epoch_start(0, 2, steps=3)
    assert hooks.progress is not None
    hooks.epoch_end(0, METRICS)
    assert hooks.progress is None
