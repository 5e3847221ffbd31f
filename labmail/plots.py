"""Figures for the course (matplotlib). Display layer: nothing in the core imports this module.

Every function takes an optional ``ax`` and returns the Axes, as pandas and matplotlib do.
"""

from __future__ import annotations

__all__ = ["class_heatmap", "STATUS_COLORS"]

#: One colour per audit status (colour-blind friendly: green/blue/grey/orange/red, plus the text in each cell).
STATUS_COLORS = {"OK": "#2e7d32", "INFO": "#1565c0", "OPTIONAL": "#9e9e9e", "WRONG": "#ef6c00", "MISSING": "#c62828"}


def class_heatmap(frame, ax=None):
    """Students × checks, one coloured cell per status, the status written in it."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    columns = [c for c in frame.columns if c not in ("étudiant", "domaine", "score")]
    order = list(STATUS_COLORS)
    values = frame[columns].apply(lambda col: col.map(order.index)).to_numpy()
    if ax is None:
        _fig, ax = plt.subplots(figsize=(1.2 * len(columns) + 3, 0.45 * len(frame) + 1.5))
    ax.imshow(values, cmap=ListedColormap([STATUS_COLORS[s] for s in order]), vmin=0, vmax=len(order) - 1, aspect="auto")
    ax.set_xticks(range(len(columns)), labels=columns, rotation=30, ha="right")
    ax.set_yticks(range(len(frame)), labels=[f"{s} ({d})" for s, d in zip(frame["étudiant"], frame["domaine"])])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, frame[columns[j]].iloc[i], ha="center", va="center", color="white", fontsize=8)
    ax.set_title("État des domaines de la classe")
    return ax
