"""Figures for the course (matplotlib). Display layer: nothing in the core imports this module.

Every function takes an optional ``ax`` and returns the Axes, as pandas and matplotlib do.
"""

from __future__ import annotations

from .i18n import column

__all__ = ["class_heatmap", "trust_chain", "trust_chain_compare", "STATUS_COLORS", "CHAIN_COLORS", "dmarc_report", "message_flow", "hop_timeline"]

#: One colour per audit status (colour-blind friendly: green/blue/grey/orange/red, plus the text in each cell).
STATUS_COLORS = {"OK": "#2e7d32", "INFO": "#1565c0", "OPTIONAL": "#9e9e9e", "WRONG": "#ef6c00", "MISSING": "#c62828"}
#: The trust chain: pass green, fail red, neutral grey (box face, then text colour).
CHAIN_COLORS = {"pass": "#c8e6c9", "fail": "#ffcdd2", "neutral": "#eeeeee"}
_CHAIN_EDGES = {"pass": "#2e7d32", "fail": "#c62828", "neutral": "#757575"}


def class_heatmap(frame, ax=None):
    """Students × checks, one coloured cell per status, the status written in it."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    columns = [c for c in frame.columns if c not in (column("étudiant"), column("domaine"), "score")]
    order = list(STATUS_COLORS)
    values = frame[columns].apply(lambda col: col.map(order.index)).to_numpy()
    if ax is None:
        _fig, ax = plt.subplots(figsize=(1.2 * len(columns) + 3, 0.45 * len(frame) + 1.5))
    ax.imshow(values, cmap=ListedColormap([STATUS_COLORS[s] for s in order]), vmin=0, vmax=len(order) - 1, aspect="auto")
    ax.set_xticks(range(len(columns)), labels=columns, rotation=30, ha="right")
    ax.set_yticks(range(len(frame)), labels=[f"{s} ({d})" for s, d in zip(frame[column("étudiant")], frame[column("domaine")])])
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
    for verdict in ("pass", "fail"):
        if verdict not in table:
            table[verdict] = 0
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
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_source.figure.tight_layout()
    return axes


def message_flow(flow, ax=None):
    """The flow of a message (:func:`labmail.replay.flow`): one box per agent (MUA, MSA, MTA, MDA) with its real
    host and the postal analogy below, one arrow per transfer with protocol, port, TLS and authentication (AUTH),
    and the receiver's DNS checks coloured by result (pass green, fail red, other grey)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    n = len(flow.nodes)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(2.6 * n, 3.6))
    width = 1.0 / n
    for i, node in enumerate(flow.nodes):
        x = i * width + 0.1 * width
        ax.add_patch(FancyBboxPatch((x, 0.55), 0.8 * width, 0.25, boxstyle="round,pad=0.01", facecolor="#e3f2fd",
                                    edgecolor="#1565c0", gid=f"node-{node.role}"))
        ax.text(x + 0.4 * width, 0.71, node.role, ha="center", fontsize=11, fontweight="bold", color="#1565c0")
        ax.text(x + 0.4 * width, 0.61, _clip(node.host, 26), ha="center", fontsize=7.5)
        ax.text(x + 0.4 * width, 0.45, _wrap(str(node.caption), 26), ha="center", va="top", fontsize=7, style="italic",
                color="#555555")
    for i, edge in enumerate(flow.edges):
        x0, x1 = i * width + 0.9 * width, (i + 1) * width + 0.1 * width
        colour = "#2e7d32" if edge.tls else "#c62828"
        ax.annotate("", xy=(x1, 0.675), xytext=(x0, 0.675), arrowprops={"arrowstyle": "->", "color": colour, "lw": 2})
        label = f"{edge.protocol}{'' if edge.port in ('', '—') else ' :' + edge.port}\n" + ("TLS" if edge.tls else "sans TLS") + (" + AUTH" if edge.authenticated else "")
        ax.text((x0 + x1) / 2, 0.86, label, ha="center", fontsize=7, color=colour)
        for j, question in enumerate(edge.dns):  # asked by the receiving agent: under its caption
            result = question.rsplit(" ", 1)[-1]
            face = {"pass": _CHAIN_EDGES["pass"], "fail": _CHAIN_EDGES["fail"]}.get(result, _CHAIN_EDGES["neutral"])
            ax.text((i + 1) * width + 0.5 * width, 0.22 - 0.075 * j, question, ha="center",
                    fontsize=7, color="white", bbox={"boxstyle": "round", "facecolor": face, "edgecolor": face})
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.12, 1.0)
    ax.axis("off")
    ax.set_title("Le trajet du message (en-têtes Received)")
    return ax


def hop_timeline(raw, ax=None):
    """The hops of a message on a time axis (seconds after the first ``Received``), delays written on each hop;
    a negative delay — a clock out of time on one server — is drawn in red and flagged."""
    import matplotlib.pyplot as plt

    from .headers import _hop_rows

    rows = [r for r in _hop_rows(raw) if r["date"] is not None]
    if ax is None:
        _fig, ax = plt.subplots(figsize=(9, 0.6 * max(len(rows), 2) + 1.2))
    if not rows:
        ax.text(0.5, 0.5, "aucun en-tête Received daté", ha="center")
        ax.axis("off")
        return ax
    start = rows[0]["date"]
    for index, row in enumerate(rows):
        t = (row["date"] - start).total_seconds()
        skew = row["décalage_horloge"]
        colour = _CHAIN_EDGES["fail"] if skew else "#1565c0"
        ax.plot([t], [index], "o", color=colour, markersize=8)
        delay = row["délai_s"]
        text = f"{row['par'] or '?'}" + ("" if delay is None else f"  (+{delay:.0f} s)" if not skew else
                                        f"  ({delay:.0f} s : horloge décalée !)")
        ax.text(t, index + 0.18, text, fontsize=8, color=colour)
    ax.set_yticks(range(len(rows)), labels=[f"étape {r['étape']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("secondes après la première étape")
    ax.set_title("Chronologie des étapes")
    return ax


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
