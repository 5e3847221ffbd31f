"""Figures for the course (matplotlib). Display layer: nothing in the core imports this module.

Every function takes an optional ``ax`` and returns the Axes, as pandas and matplotlib do.
"""

from __future__ import annotations

__all__ = ["class_heatmap", "trust_chain", "trust_chain_compare", "STATUS_COLORS", "CHAIN_COLORS", "dmarc_report"]

#: One colour per audit status (colour-blind friendly: green/blue/grey/orange/red, plus the text in each cell).
STATUS_COLORS = {"OK": "#2e7d32", "INFO": "#1565c0", "OPTIONAL": "#9e9e9e", "WRONG": "#ef6c00", "MISSING": "#c62828"}
#: The trust chain: pass green, fail red, neutral grey (box face, then text colour).
CHAIN_COLORS = {"pass": "#c8e6c9", "fail": "#ffcdd2", "neutral": "#eeeeee"}
_CHAIN_EDGES = {"pass": "#2e7d32", "fail": "#c62828", "neutral": "#757575"}


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


def trust_chain(chain, ax=None, *, details: bool = True, max_lines: int = 6):
    """The whole judgment of a message (:func:`labmail.replay.replay`) as one figure: a box per step, top to
    bottom, coloured by outcome (pass green, fail red, neutral grey), with its summary and, when ``details``,
    the sub-checks (SPF terms, DKIM key / body hash / signature, DMARC alignment). Save it with
    ``ax.figure.savefig("chaine.png")`` (or ``.svg``).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    heights = [1.0 + (0.42 * min(len(s.lines), max_lines) + (0.42 if len(s.lines) > max_lines else 0) if details else 0)
               for s in chain.steps]
    total = sum(heights) + 0.3 * (len(heights) - 1)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(9, 0.42 * total + 1))
    y = total
    for step, height in zip(chain.steps, heights):
        top = y
        box = FancyBboxPatch((0.02, top - height), 0.96, height, boxstyle="round,pad=0.02,rounding_size=0.08",
                             facecolor=CHAIN_COLORS[step.status], edgecolor=_CHAIN_EDGES[step.status], linewidth=1.5,
                             mutation_aspect=1 / 10, gid=f"step-{step.phase}")
        ax.add_patch(box)
        mark = {"pass": "✔", "fail": "✘", "neutral": "•"}[step.status]
        ax.text(0.04, top - 0.45, f"{mark} {step.title}", fontsize=10, fontweight="bold", va="center",
                color=_CHAIN_EDGES[step.status])
        ax.text(0.30, top - 0.45, _clip(str(step.summary), 80), fontsize=9, va="center")
        if details:
            shown = step.lines[:max_lines]
            for i, (text, status) in enumerate(shown):
                ax.text(0.06, top - 0.95 - 0.42 * i, _clip(text, 115), fontsize=7.5, va="center",
                        color=_CHAIN_EDGES[status], family="monospace")
            if len(step.lines) > max_lines:
                ax.text(0.06, top - 0.95 - 0.42 * len(shown), f"… (+{len(step.lines) - max_lines})", fontsize=7.5,
                        va="center", color="#757575")
        y = top - height - 0.3
        if y > 0:
            ax.annotate("", xy=(0.5, y + 0.02), xytext=(0.5, y + 0.28), arrowprops={"arrowstyle": "->", "color": "#757575"})
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.1, total + 0.1)
    ax.axis("off")
    ax.set_title(f"Le message vu par {chain.receiver} : {_DISPOSITION[chain.disposition]}")
    return ax


_DISPOSITION = {"inbox": "boîte de réception", "junk": "indésirables", "rejected": "refusé"}


def trust_chain_compare(before, after, *, labels=("avant", "après"), details: bool = False):
    """The same message judged twice (e.g. before and after publishing SPF/DKIM/DMARC), side by side."""
    import matplotlib.pyplot as plt

    rows = max(len(before.steps), len(after.steps))
    fig, axes = plt.subplots(1, 2, figsize=(16, 0.6 * rows * (2 if details else 1) + 1.5))
    for ax, chain, label in zip(axes, (before, after), labels):
        trust_chain(chain, ax=ax, details=details)
        ax.set_title(f"{label} — {_DISPOSITION[chain.disposition]}")
    fig.tight_layout()
    return axes


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def dmarc_report(frame, axes=None):
    """DMARC aggregate reports (:func:`labmail.reports.parse`): messages per sending address, DMARC pass (green)
    or fail (red); and per mechanism, how many passed aligned SPF and aligned DKIM. Returns the two Axes."""
    import matplotlib.pyplot as plt

    if axes is None:
        _fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * max(frame["source_ip"].nunique(), 3) + 2))
    by_source, by_mechanism = axes
    passed = (frame["dkim"] == "pass") | (frame["spf"] == "pass")
    table = frame.assign(dmarc=passed.map({True: "pass", False: "fail"})).pivot_table(
        index="source_ip", columns="dmarc", values="count", aggfunc="sum", fill_value=0)
    for column in ("pass", "fail"):
        if column not in table:
            table[column] = 0
    table = table[["pass", "fail"]]
    table.plot.barh(stacked=True, ax=by_source, color=[_CHAIN_EDGES["pass"], _CHAIN_EDGES["fail"]])
    by_source.set_xlabel("messages")
    by_source.set_ylabel("adresse d'envoi")
    by_source.set_title("DMARC par source")
    counts = {(mech, result): int(frame.loc[frame[mech] == result, "count"].sum())
              for mech in ("spf", "dkim") for result in ("pass", "fail")}
    labels = ["SPF aligné", "DKIM aligné"]
    by_mechanism.barh(labels, [counts[("spf", "pass")], counts[("dkim", "pass")]], color=_CHAIN_EDGES["pass"], label="pass")
    by_mechanism.barh(labels, [counts[("spf", "fail")], counts[("dkim", "fail")]],
                      left=[counts[("spf", "pass")], counts[("dkim", "pass")]], color=_CHAIN_EDGES["fail"], label="fail")
    by_mechanism.legend()
    by_mechanism.set_xlabel("messages")
    by_mechanism.set_title("par mécanisme")
    return axes
