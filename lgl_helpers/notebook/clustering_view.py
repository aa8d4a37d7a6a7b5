"""Notebook 02's view of a clustering: quality tables, cluster-size and purity figures, UMAP panels.

Every figure is a plain matplotlib Figure (not registered with pyplot); :func:`save_figures` writes
them as PNGs next to the pseudo labels.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from lgl_helpers.clustering.pseudo_labels import check_labels
from lgl_helpers.clustering.quality import MIN_MEMBERS, UntrainedBaseline, cluster_summary
from lgl_helpers.files import atomic_write_bytes


def format_cluster_table(rows: Sequence[dict], max_speakers: int = 6) -> str:
    """Plain-text table of :func:`cluster_summary` rows: id, size, purity and member speakers (count)."""
    lines = [f"{'cluster':>7}  {'size':>5}  {'purity':>6}  {'speakers':>8}  members (speaker×utterances)"]
    for row in rows:
        members = ", ".join(f"{spk}×{count}" for spk, count in row["speakers"][:max_speakers])
        if row["n_speakers"] > max_speakers:
            members += f", … {row['n_speakers'] - max_speakers} more"
        lines.append(f"{row['cluster']:>7}  {row['size']:>5}  {row['purity']:>6.2f}  {row['n_speakers']:>8}  {members}")
    return "\n".join(lines)


_QUALITY_ROWS = (
    ("n_utterances", "utterances", "{}"),
    ("nmi", "NMI", "{:.4f}"),
    ("purity", "purity", "{:.4f}"),
    ("inverse_purity", "inverse purity", "{:.4f}"),
    ("n_nonempty_clusters", "non-empty clusters", "{}"),
    ("n_speakers", "true speakers", "{}"),
    ("n_merging_clusters", f"clusters merging speakers (≥{MIN_MEMBERS} utt. each)", "{}"),
    ("n_split_speakers", f"speakers split over clusters (≥{MIN_MEMBERS} utt. each)", "{}"),
    ("n_singleton_clusters", "singleton clusters", "{}"),
    ("n_empty_clusters", "empty clusters", "{}"),
)


def quality_columns(quality: dict, untrained: UntrainedBaseline | None) -> dict[str, dict | None]:
    """:func:`format_quality`'s columns for notebook 02: the trained encoder on every utterance, then the
    untrained encoder (None: skipped); on a sample, the trained encoder on the same sample before it.
    With over-clustering, the k-means clusters before the merge come first."""
    if quality.get("over"):
        over = {f"k-means, {quality['over']['n_nonempty_clusters']} (before merge)": quality["over"]}
        return over | quality_columns({k: v for k, v in quality.items() if k != "over"}, untrained)
    if untrained is None:
        return {"trained": quality, "untrained": None}
    if not untrained.on_sample:
        return {"trained": quality, "untrained": untrained.untrained}
    return {"trained": quality, "trained, sample": untrained.trained, "untrained, sample": untrained.untrained}


def format_quality(columns: dict[str, dict | None]) -> str:
    """Plain-text table of :func:`clustering_quality` dicts side by side, e.g. ``{"Stage I": q1, "untrained": q0}``;
    a None column reads "skipped"."""
    names = list(columns)
    width = max(len(label) for _, label, _ in _QUALITY_ROWS)
    widths = [max(12, len(name)) for name in names]
    lines = [" " * width + "".join(f"  {name:>{w}}" for name, w in zip(names, widths))]
    for row, (key, label, fmt) in enumerate(_QUALITY_ROWS + (("cluster_size", "cluster size min/median/max", None),)):
        cells = []
        for name in names:
            if columns[name] is None:
                cells.append("skipped" if row == 0 else "")
                continue
            value = columns[name].get(key)
            if value is None:
                cells.append("–")
            elif key == "cluster_size":
                cells.append(f"{value['min']}/{value['median']:g}/{value['max']}")
            else:
                cells.append(fmt.format(value))
        lines.append((f"{label:<{width}}" + "".join(f"  {cell:>{w}}" for cell, w in zip(cells, widths))).rstrip())
    return "\n".join(lines)


def plot_cluster_sizes(pseudo_labels: np.ndarray, speakers: Sequence | None = None, n_clusters: int | None = None):
    """Histogram of utterances per cluster (empty clusters count as size 0 when ``n_clusters`` is given).

    With ``speakers`` (N,), the utterances-per-speaker histogram is drawn over it for comparison, on
    its own (right) axis: on a corpus where every speaker has the same number of utterances it is one
    tall bar, which on a shared axis would flatten the clusters' histogram. Returns a matplotlib Figure.
    """
    labels = check_labels(pseudo_labels)
    sizes = np.bincount(labels, minlength=n_clusters or 0)
    if n_clusters is None:
        sizes = sizes[sizes > 0]
    per_speaker = None if speakers is None else np.unique(np.asarray(speakers), return_counts=True)[1]
    top = max(int(sizes.max()), 0 if per_speaker is None else int(per_speaker.max()))
    edges = np.histogram_bin_edges(np.arange(top + 2) - 0.5, bins=min(60, top + 1))
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(sizes, bins=edges, color="tab:blue", alpha=0.75, label=f"clusters ({sizes.size})")
    handles = []
    if per_speaker is not None:
        speaker_ax = ax.twinx()
        *_, patches = speaker_ax.hist(
            per_speaker,
            bins=edges,
            histtype="step",
            color="black",
            linewidth=1.5,
            label=f"true speakers ({per_speaker.size}, right axis)",
        )
        speaker_ax.set_ylabel("true speakers")
        speaker_ax.set_ylim(bottom=0)
        handles = patches if isinstance(patches, list) else [patches]
    ax.axvline(
        labels.size / max(int((sizes > 0).sum()), 1),
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label="mean cluster size",
    )
    ax.set_xlabel("utterances")
    ax.set_ylabel("clusters")
    ax.set_title("cluster-size distribution")
    own, labels = ax.get_legend_handles_labels()
    ax.legend([*own, *handles[:1]], [*labels, *[h.get_label() for h in handles[:1]]], fontsize=8)
    fig.tight_layout()
    return fig


def plot_purity_vs_size(pseudo_labels: np.ndarray, speakers: Sequence):
    """Scatter of each non-empty cluster's purity against its size (log x). Returns a matplotlib Figure."""
    rows = cluster_summary(pseudo_labels, speakers)
    size = np.array([row["size"] for row in rows])
    purity = np.array([row["purity"] for row in rows])
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size.size)  # separates clusters of equal size
    ax.scatter(size * np.exp(jitter * 0.2), purity, s=12, alpha=0.6, color="tab:blue", edgecolors="none")
    ax.set_xscale("log")
    # Plain numbers at 1-2-5 steps; matplotlib would also label minor ticks on a short log range,
    # and those labels run into each other.
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("cluster size (utterances, log scale)")
    ax.set_ylabel("purity (majority speaker's share)")
    ax.set_title(
        f"purity per cluster ({size.size} clusters; size-weighted mean {np.average(purity, weights=size):.3f})"
    )
    fig.tight_layout()
    return fig


def _colour_codes(values: np.ndarray) -> np.ndarray:
    """(S,) ids → (S,) colour indices in [0, 20) of the tab20 map, by sorted id."""
    _, codes = np.unique(values, return_inverse=True)
    return codes % 20


def plot_umap(xy: np.ndarray, pseudo_labels: np.ndarray, speakers: Sequence, highlight_cluster: int | None = None):
    """Two UMAP panels of the same points: coloured by pseudo label (left) and by true speaker (right).

    xy: (S, 2) from :func:`lgl_helpers.notebook.projection.umap_projection`; pseudo_labels, speakers: (S,) for the same sample. Colours
    cycle through 20 hues, so with many clusters equal colours can mean different clusters.
    ``highlight_cluster`` circles that cluster's members in both panels. Returns a matplotlib Figure.
    """
    xy = np.asarray(xy)
    labels = check_labels(pseudo_labels, xy.shape[0])
    speakers = np.asarray(speakers)
    if speakers.shape != (xy.shape[0],):
        raise ValueError(f"speakers has shape {speakers.shape}, expected ({xy.shape[0]},)")
    fig = Figure(figsize=(11, 4.8))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    panels = (
        (axes[0], _colour_codes(labels), f"by pseudo label ({np.unique(labels).size} clusters)"),
        (axes[1], _colour_codes(speakers), f"by true speaker ({np.unique(speakers).size} speakers)"),
    )
    members = labels == highlight_cluster if highlight_cluster is not None else None
    for ax, colour, title in panels:
        ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="tab20", vmin=0, vmax=19, s=6, alpha=0.8, edgecolors="none")
        if members is not None and members.any():
            # A thin ring well outside each member's dot, and the dot drawn again larger on top: the
            # highlight leaves the colours (which speakers the cluster mixes) visible.
            ax.scatter(
                xy[members, 0],
                xy[members, 1],
                s=110,
                facecolors="none",
                edgecolors="black",
                linewidths=0.7,
                label=f"cluster {highlight_cluster} ({int(members.sum())} in sample)",
            )
            ax.scatter(
                xy[members, 0],
                xy[members, 1],
                c=colour[members],
                cmap="tab20",
                vmin=0,
                vmax=19,
                s=30,
                edgecolors="none",
                zorder=3,
            )
            ax.legend(loc="best", fontsize=8)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"UMAP of {xy.shape[0]} sampled utterances")
    fig.tight_layout()
    return fig


def save_figures(figures: dict[str, Any], folder: str | os.PathLike, dpi: int = 110) -> dict[str, Path]:
    """Save ``{name: Figure}`` as ``folder/<name>.png`` atomically; returns name → path."""
    paths = {}
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        paths[name] = atomic_write_bytes(Path(folder) / f"{name}.png", buffer.getvalue())
    return paths
