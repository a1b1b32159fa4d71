"""Learning-curve pictures: what is drawn, not how it looks."""

from __future__ import annotations


def test_learning_curves_count_epochs_from_1(monkeypatch):
    """The log says "epoch 1" for history epoch 0; the picture said 0 (and `runs compare --plot` 1)."""
    from matplotlib.axes import Axes

    from medseg.viz.curves import learning_curves

    drawn, plot = [], Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append(list(args[0]))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    learning_curves([{"epoch": 0, "train_loss": 1.0, "val_dice_mean": 0.5}, {"epoch": 1, "train_loss": 0.5}])
    assert drawn == [[1, 2], [1]]
