"""Overlay pictures: the legend says only what is drawn."""

from __future__ import annotations

from medseg.viz.overlays import legend_handles


def test_the_legend_names_truth_only_where_ground_truth_is_drawn():
    """`predict --overlays` draws no ground truth, and its legend still showed a dashed "truth" line."""
    assert [h.get_label() for h in legend_handles(["ET", "TC", "WT"], truth=False)] == ["ET", "TC", "WT", "prediction"]
    assert [h.get_label() for h in legend_handles(["ET"], truth=True)] == ["ET", "prediction", "truth"]
