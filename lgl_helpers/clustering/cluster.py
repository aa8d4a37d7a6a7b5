"""One clustering pass of Stage II (step 1, docs/method.md "Clustering"), and notebook 02's run of it.

Every training utterance is embedded clean at full length (or its first ``max_seconds``) in
length-bucketed batches, L2-normalised and clustered with faiss k-means
(:mod:`lgl_helpers.clustering.kmeans`); each utterance's pseudo label is its nearest centroid, and
:mod:`lgl_helpers.clustering.quality` measures the labels against the true speakers.

Files of one clustering, all written atomically into ``out_dir``:

- ``embeddings.npy``: emb (N, 192) float32, unit norm, in training-list order; ``embeddings.json`` records
  the encoder weights' SHA-1, the list's SHA-1, ``train_root`` and ``max_seconds``, so that a later call
  with the same inputs reuses the embeddings instead of embedding again.
- ``centroids.npy``: (n_clusters, 192) float32, the k-means centroids (with ``n_clusters_over``: the
  mean embedding of each merged cluster; the over-clustering's centroids in ``over_centroids.npy``).
- ``quality.json``: :func:`~lgl_helpers.clustering.quality.clustering_quality` plus the k-means settings
  and the ``fingerprint`` of the whole pass (the embeddings' inputs and the k-means settings).
- ``pseudo_labels.txt``: one ``<relative wav path> <cluster id>`` a line, in training-list order, cluster
  ids in ``[0, n_clusters)``. Written last, so its presence means the clustering finished.

With ``n_clusters_over`` > 0 k-means clusters into that many clusters and their centroids are merged
by agglomerative clustering down to ``n_clusters`` (:mod:`lgl_helpers.clustering.merge`); each
utterance's pseudo label is its k-means cluster's merged cluster, and ``quality.json`` adds the
quality of the over-clustering under ``"over"``.

Notebook 02 also clusters with an untrained encoder as a floor (:func:`compare_untrained`), on every
utterance or, to spare a second full pass, on a seeded random sample with k scaled to it, the trained
encoder's embeddings of the same utterances clustered with the same k beside it.

Work is done once per run folder: a finished clustering with the same fingerprint in ``out_dir`` or in
another clustering folder of the run (:func:`clustering_folders`: notebook 02's ``clustering/``, each
Stage II mode's ``iter_XX/``) is reused whole, its files hard-linked (or copied) into ``out_dir``; with
only the embeddings' inputs matching, the embeddings are reused and k-means runs. Notebooks 03 and 04
thus take iteration 1's clustering from notebook 02 (or from each other). Utterances are batched by the
training list's durations, not by reading every wav header.

The speaker ids of the training list are used here only to measure quality, never for training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgl_helpers.clustering.kmeans import (
    REFERENCE_MAX_POINTS_PER_CENTROID,
    REFERENCE_N_ITER,
    REFERENCE_SEED,
    kmeans_pseudo_labels,
    resolve_use_gpu,
)
from lgl_helpers.clustering.merge import DEFAULT_MERGE_NEIGHBORS, merge_centroids, merged_centroids
from lgl_helpers.clustering.pseudo_labels import read_pseudo_labels, relative_paths, write_pseudo_labels
from lgl_helpers.clustering.quality import UntrainedBaseline, clustering_quality
from lgl_helpers.config import NotebookConfig, check, check_int, check_n_clusters, check_non_negative, check_positive
from lgl_helpers.core import distributed
from lgl_helpers.corpus.lists import TrainEntry, check_list, read_train_list
from lgl_helpers.files import atomic_save_npy, read_json, write_json
from lgl_helpers.runs import require_run, resolve_data_paths, resolve_path, run_folder

log = logging.getLogger(__name__)


@dataclass
class ClusteringResult:
    """One clustering pass. pseudo_labels: (N,) int64; emb: (N, 192) float32; centroids: (K, 192) float32."""

    pseudo_labels: np.ndarray
    emb: np.ndarray
    centroids: np.ndarray
    quality: dict
    out_dir: Path
    reused_embeddings: bool
    reused_from: Path | None = None  # the folder whose finished clustering was reused whole, if any


def encoder_fingerprint(model) -> str:
    """SHA-1 of an encoder's state dict (names, dtypes, shapes and bytes): equal weights, equal fingerprint."""
    import torch

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _list_fingerprint(rel_paths: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(rel_paths).encode()).hexdigest()


def clustering_folders(run_dir: str | os.PathLike) -> list[Path]:
    """The folders of a run that may hold a finished clustering: notebook 02's ``clustering/`` (and its
    sub-folders) and every Stage II mode's ``iter_XX/``; the fingerprint decides which one matches."""
    run_dir = Path(run_dir)
    found = [run_dir / "clustering", *sorted(run_dir.glob("clustering/*/")), *sorted(run_dir.glob("stage2_*/iter_*/"))]
    return [folder for folder in found if (folder / "quality.json").is_file()]


def _link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` atomically: a hard link (no bytes copied) where the file system allows, else a copy.

    Safe because the kit never changes these files in place: every write replaces them by rename.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _matching_embeddings(folder: Path, meta: dict) -> np.ndarray | None:
    emb_path, meta_path = folder / "embeddings.npy", folder / "embeddings.json"
    if not (emb_path.is_file() and meta_path.is_file()):
        return None
    saved = read_json(meta_path)
    differing = [key for key in meta if saved.get(key) != meta[key]]
    if differing:
        log.debug("embeddings in %s differ in %s", folder, ", ".join(differing))
        return None
    emb = np.load(emb_path, allow_pickle=False)
    if emb.ndim != 2 or emb.shape[0] != meta["n_utterances"]:
        log.info("saved embeddings in %s have shape %s; not reused", folder, emb.shape)
        return None
    return emb


def _reuse_embeddings(out_dir: Path, folders: Sequence[Path], meta: dict) -> np.ndarray | None:
    """Embeddings of the same inputs from ``out_dir`` or else the first of ``folders`` that has them (linked into ``out_dir``)."""
    for folder in [out_dir, *folders]:
        emb = _matching_embeddings(folder, meta)
        if emb is None:
            continue
        if folder != out_dir:
            for name in ("embeddings.npy", "embeddings.json"):
                _link_or_copy(folder / name, out_dir / name)
        log.info("reusing %d embeddings from %s (same encoder weights, list, root, max_seconds)", len(emb), folder)
        return emb
    return None


def _reuse_clustering(
    out_dir: Path, folders: Sequence[Path], fingerprint: dict, entries: Sequence[TrainEntry], checkpoint: str | None
) -> ClusteringResult | None:
    """A finished clustering with ``fingerprint`` from ``out_dir`` or else the first of ``folders`` that has one.

    Its files are linked into ``out_dir``, its ``quality.json`` rewritten there with this call's
    ``checkpoint`` and ``reused_from``, and ``pseudo_labels.txt`` put last, as after a clustering.
    """
    names = ("embeddings.npy", "embeddings.json", "centroids.npy", "quality.json", "pseudo_labels.txt")
    for folder in [out_dir, *folders]:
        if not all((folder / name).is_file() for name in names):
            continue
        quality = read_json(folder / "quality.json")
        if quality.get("fingerprint") != fingerprint:
            continue
        n_clusters = fingerprint["kmeans"]["n_clusters"]
        labels = read_pseudo_labels(folder / "pseudo_labels.txt", entries, n_clusters)
        emb = np.load(folder / "embeddings.npy", allow_pickle=False)
        centroids = np.load(folder / "centroids.npy", allow_pickle=False)
        if folder != out_dir:
            # An older clustering's labels must not stand next to this one's quality.json, even after a crash.
            (out_dir / "pseudo_labels.txt").unlink(missing_ok=True)
            for name in ("embeddings.npy", "embeddings.json", "centroids.npy"):
                _link_or_copy(folder / name, out_dir / name)
            quality = {**quality, "checkpoint": checkpoint, "reused_from": str(folder)}
            write_json(out_dir / "quality.json", quality)
            _link_or_copy(folder / "pseudo_labels.txt", out_dir / "pseudo_labels.txt")
        elif quality.get("checkpoint") != checkpoint:
            quality = {**quality, "checkpoint": checkpoint}
            write_json(out_dir / "quality.json", quality)
        log.info(
            "reusing the clustering of %s (same encoder weights, list, root, max_seconds and k-means settings): "
            "NMI %.4f, embedding and k-means skipped",
            folder,
            quality["nmi"],
        )
        return ClusteringResult(labels, emb, centroids, quality, out_dir, True, folder)
    return None


def cluster_utterances(
    encoder,
    entries: Sequence[TrainEntry],
    train_root: str | os.PathLike,
    n_clusters: int,
    out_dir: str | os.PathLike,
    *,
    n_iter: int = REFERENCE_N_ITER,
    seed: int = REFERENCE_SEED,
    max_points_per_centroid: int = REFERENCE_MAX_POINTS_PER_CENTROID,
    max_seconds: float | None = None,
    batch_seconds: float | None = None,
    device: str | None = None,
    use_gpu: bool | str = "auto",
    reuse: bool = True,
    reuse_from: Sequence[str | os.PathLike] = (),
    show_progress: bool = True,
    n_clusters_over: int = 0,
) -> ClusteringResult | None:
    """One clustering pass: embed every entry, k-means, assign, write ``out_dir`` files (module docstring).

    Returns None on the ranks other than 0 of a distributed run (they take part in the embedding only).

    encoder: an ECAPA-TDNN module or a checkpoint path (any layout ``models.load_encoder`` reads).
    entries: the training list; ``train_root`` / entry.path is each wav, batched by entry.duration.
    ``max_seconds`` None = full length; ``batch_seconds`` None = the embedder's default budget of
    padded audio per batch. With ``reuse``, a finished clustering of the same fingerprint in
    ``out_dir`` or one of ``reuse_from`` (e.g. :func:`clustering_folders`) is taken whole, else
    embeddings of the same encoder weights, list, root and ``max_seconds``. Raises ``ValueError``
    before embedding when ``n_clusters`` (or ``n_clusters_over``) exceeds the number of entries.
    ``n_clusters_over`` > 0: k-means into that many clusters (at least ``n_clusters``), merged to
    ``n_clusters`` (module docstring).
    """
    from lgl_helpers.core import models
    from lgl_helpers.core.audio import SAMPLE_RATE
    from lgl_helpers.core.embed import embed_files

    check_n_clusters(n_clusters, len(entries))
    check_n_clusters_over(n_clusters_over, n_clusters, len(entries))
    out_dir, train_root = Path(out_dir), Path(train_root)
    checkpoint = None
    if isinstance(encoder, (str, os.PathLike)):
        checkpoint = str(encoder)
        encoder = models.load_encoder(encoder)
    rel_paths = relative_paths(entries)
    meta = {
        "encoder_sha1": encoder_fingerprint(encoder),
        "list_sha1": _list_fingerprint(rel_paths),
        "train_root": str(train_root),
        "max_seconds": max_seconds,
        "n_utterances": len(rel_paths),
    }
    settings = {
        "n_clusters": int(n_clusters),
        "n_iter": int(n_iter),
        "seed": int(seed),
        "max_points_per_centroid": int(max_points_per_centroid),
        "n_training_points": int(min(len(rel_paths), n_clusters * max_points_per_centroid)),
        "index": "IndexFlatIP (GPU)" if resolve_use_gpu(use_gpu) else "IndexFlatIP (CPU)",
    }
    if n_clusters_over:
        # Only then: a clustering without over-clustering keeps the fingerprint it always had.
        settings["n_training_points"] = int(min(len(rel_paths), n_clusters_over * max_points_per_centroid))
        settings["merge"] = {
            "n_clusters_over": int(n_clusters_over),
            "linkage": "average",
            "metric": "cosine",
            "n_neighbors": DEFAULT_MERGE_NEIGHBORS,
        }
    fingerprint = {**meta, "kmeans": settings}
    folders = [Path(f) for f in reuse_from if Path(f).resolve() != out_dir.resolve()]
    # In a distributed run rank 0 decides what can be reused and clusters; the other ranks only
    # embed their share of the list when it must be embedded, and get None.
    main = distributed.is_main()
    reused = emb = None
    if reuse and main:
        reused = _reuse_clustering(out_dir, folders, fingerprint, entries, checkpoint)
        if reused is None:
            emb = _reuse_embeddings(out_dir, folders, meta)
    reused_embeddings = emb is not None
    must_embed = distributed.broadcast(reused is None and emb is None)
    if must_embed:
        start = time.perf_counter()
        kwargs = {} if batch_seconds is None else {"batch_seconds": batch_seconds}
        emb = embed_files(
            encoder,
            [train_root / p for p in rel_paths],
            device=device,
            max_seconds=max_seconds,
            # The list's durations group utterances by length; reading 1 M wav headers for that costs minutes.
            lengths=[round(e.duration * SAMPLE_RATE) for e in entries],
            show_progress=show_progress,
            **kwargs,
        )
        log.info("embedded %d utterances in %.1f s", emb.shape[0], time.perf_counter() - start)
        atomic_save_npy(out_dir / "embeddings.npy", emb)
        write_json(out_dir / "embeddings.json", {**meta, "checkpoint": checkpoint})
    if not main:
        return None
    if reused is not None:
        return reused
    # Renormalising is idempotent and guards against embeddings saved by an older embedder.
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    speakers = [e.speaker for e in entries]
    over = None
    if n_clusters_over:
        over_labels, over_centroids = kmeans_pseudo_labels(
            emb,
            n_clusters_over,
            n_iter=n_iter,
            seed=seed,
            max_points_per_centroid=max_points_per_centroid,
            use_gpu=use_gpu,
        )
        pseudo_labels = merge_centroids(over_centroids, n_clusters)[over_labels]
        centroids = merged_centroids(emb, pseudo_labels, n_clusters)
        over = clustering_quality(over_labels, speakers, n_clusters_over)
        atomic_save_npy(out_dir / "over_centroids.npy", over_centroids)
    else:
        pseudo_labels, centroids = kmeans_pseudo_labels(
            emb, n_clusters, n_iter=n_iter, seed=seed, max_points_per_centroid=max_points_per_centroid, use_gpu=use_gpu
        )
    quality = clustering_quality(pseudo_labels, speakers, n_clusters)
    if over is not None:
        quality["over"] = over
    quality["kmeans"] = settings
    quality["checkpoint"] = checkpoint
    quality["max_seconds"] = max_seconds
    quality["fingerprint"] = fingerprint
    # An older clustering's labels must not stand next to this one's quality.json, even after a crash.
    (out_dir / "pseudo_labels.txt").unlink(missing_ok=True)
    atomic_save_npy(out_dir / "centroids.npy", centroids)
    write_json(out_dir / "quality.json", quality)
    write_pseudo_labels(out_dir / "pseudo_labels.txt", rel_paths, pseudo_labels)
    log.info(
        "clustering: NMI %.4f, purity %.4f, inverse purity %.4f, %d non-empty clusters → %s",
        quality["nmi"],
        quality["purity"],
        quality["inverse_purity"],
        quality["n_nonempty_clusters"],
        out_dir,
    )
    return ClusteringResult(pseudo_labels, emb, centroids, quality, out_dir, reused_embeddings)


@dataclass
class ClusteringConfig(NotebookConfig):
    """Parameters of notebook 02_clustering_umap (field names equal its parameters cell)."""

    run_name: str = "lab"
    runs_dir: str = "runs"
    init_model: str = ""
    train_list: str = ""
    train_root: str = ""
    n_clusters: int = 40
    cluster_n_iter: int = REFERENCE_N_ITER
    cluster_max_points_per_centroid: int = REFERENCE_MAX_POINTS_PER_CENTROID
    cluster_max_seconds: float = 0.0
    cluster_seed: int = REFERENCE_SEED
    n_clusters_over: int = 0
    batch_seconds: float = 240.0
    umap_sample: int = 2000
    untrained_sample: int = -1
    highlight_cluster: int = -1
    n_impure: int = 8
    device: str = "auto"
    seed: int = 0
    interactive: bool = True
    recompute: bool = False  # True: compute again where the run has results (lgl_helpers.notebook.viewing)

    def validate(self) -> None:
        check_n_clusters(self.n_clusters)
        check_int("cluster_n_iter", self.cluster_n_iter, 1)
        check_int("cluster_max_points_per_centroid", self.cluster_max_points_per_centroid, 1)
        check_non_negative("cluster_max_seconds", self.cluster_max_seconds, "0 (full length) or positive")
        check_int("cluster_seed", self.cluster_seed, 0)
        check_n_clusters_over(self.n_clusters_over, self.n_clusters)
        check_positive("batch_seconds", self.batch_seconds)
        check_int("umap_sample", self.umap_sample, 5)
        check_untrained_sample(self.untrained_sample)
        check_int("highlight_cluster", self.highlight_cluster, -1, "a cluster id or -1 (the most impure cluster)")
        check_int("n_impure", self.n_impure, 0)

    @property
    def use_gpu(self) -> bool | str:
        """faiss follows ``device``: a CPU run stays on the CPU, otherwise a GPU index when faiss has one."""
        return False if self.device == "cpu" else "auto"


@dataclass
class ClusteringInputs:
    """Resolved locations of one notebook-02 run. entries: the training list in file order."""

    run_dir: Path
    out_dir: Path
    init_model: Path
    train_list: Path
    train_root: Path
    entries: list[TrainEntry]

    @property
    def speakers(self) -> np.ndarray:
        """(N,) true speaker ids in list order (for quality figures only)."""
        return np.array([e.speaker for e in self.entries])


def check_inputs(cfg: ClusteringConfig, paths: dict, *, audio: bool = True) -> list[TrainEntry]:
    """The checks of notebook 02's training data that need no encoder; returns the list's entries.

    ``paths`` as from :func:`lgl_helpers.runs.resolve_data_paths`. The list and its root must be set and
    exist, the list be well formed and hold at least ``n_clusters`` utterances; with ``audio`` every
    listed wav must also be usable (:func:`lgl_helpers.corpus.lists.check_list`, header reads, problems as
    ``file:line``), so a bad file is refused before any embedding. ``lgl-kit doctor`` calls this with
    ``audio=False``. ``untrained_sample`` must not exceed the list either. Raises ValueError /
    FileNotFoundError naming the parameter, file or line.
    """
    run_dir = run_folder(cfg.run_name, cfg.runs_dir)
    for name in ("train_list", "train_root"):
        if paths[name] is None:
            raise ValueError(
                f"{name} is empty and {run_dir / 'data.json'} does not give it; run notebook 00 or set {name}"
            )
        if not paths[name].exists():
            raise FileNotFoundError(f"{name}={getattr(cfg, name)!r}: {paths[name]} does not exist")
    entries = read_train_list(paths["train_list"])
    check_n_clusters(cfg.n_clusters, len(entries), source=str(paths["train_list"]))
    check_n_clusters_over(cfg.n_clusters_over, cfg.n_clusters, len(entries))
    check_untrained_sample(cfg.untrained_sample, len(entries), source=str(paths["train_list"]))
    if audio:
        check_list(paths["train_list"], paths["train_root"], "train")
    return entries


def resolve_inputs(cfg: ClusteringConfig, view_only: bool = False) -> ClusteringInputs:
    """Run folder, encoder checkpoint ``init_model`` (``""`` = ``runs/<run>/stage1/best.model``), training list and root
    (``""`` = from ``runs/<run>/data.json``), checked by :func:`check_inputs`; a missing one raises
    naming its parameter. ``view_only``: for showing a finished clustering, where the k-means
    parameters and the audio are not used: only the list is read."""
    if not cfg.init_model:  # the run's own Stage I model: the run must exist
        require_run(cfg.run_name, cfg.runs_dir, needs="stage1/best.model", made_by="notebooks 00 and 01")
    run_dir = run_folder(cfg.run_name, cfg.runs_dir)
    data = resolve_data_paths(run_dir, train_list=cfg.train_list, train_root=cfg.train_root)
    init_model = resolve_path(cfg.init_model) or run_dir / "stage1" / "best.model"
    if not init_model.is_file():
        hint = "set init_model" if cfg.init_model else "run notebook 01 first or set init_model"
        raise FileNotFoundError(f"init_model={cfg.init_model!r}: {init_model} does not exist ({hint})")
    entries = read_train_list(data["train_list"]) if view_only else check_inputs(cfg, data)
    return ClusteringInputs(
        run_dir, run_dir / "clustering", init_model, data["train_list"], data["train_root"], entries
    )


def cluster_from_config(
    cfg: ClusteringConfig,
    inputs: ClusteringInputs,
    encoder=None,
    out_dir: str | os.PathLike | None = None,
    n_clusters: int | None = None,
) -> ClusteringResult:
    """:func:`cluster_utterances` with the notebook's settings; ``encoder`` None = ``inputs.init_model``,
    ``out_dir`` None = ``inputs.out_dir``, ``n_clusters`` None = ``cfg.n_clusters``. A matching clustering
    anywhere in the run folder is reused."""
    return cluster_utterances(
        inputs.init_model if encoder is None else encoder,
        inputs.entries,
        inputs.train_root,
        cfg.n_clusters if n_clusters is None else n_clusters,
        inputs.out_dir if out_dir is None else out_dir,
        n_iter=cfg.cluster_n_iter,
        seed=cfg.cluster_seed,
        max_points_per_centroid=cfg.cluster_max_points_per_centroid,
        max_seconds=cfg.cluster_max_seconds or None,
        batch_seconds=cfg.batch_seconds,
        device=cfg.device,
        use_gpu=cfg.use_gpu,
        reuse_from=clustering_folders(inputs.run_dir),
        # The untrained floor (n_clusters given) is plain k-means, its k scaled to the sample.
        n_clusters_over=cfg.n_clusters_over if n_clusters is None else 0,
    )


def check_n_clusters_over(value, n_clusters: int, n_items: int | None = None, name: str = "n_clusters_over") -> int:
    """``n_clusters_over``: 0 (no over-clustering) or an integer >= ``n_clusters`` (and <= the utterances)."""
    check_int(name, value, 0, f"0 (off) or an integer >= n_clusters={n_clusters}")
    if value and value < n_clusters:
        raise ValueError(f"{name}={value} must be 0 (off) or at least n_clusters={n_clusters}")
    if value and n_items is not None and value > n_items:
        raise ValueError(f"{name}={value} is larger than the number of utterances N={n_items}")
    return int(value)


def untrained_encoder(checkpoint: str | os.PathLike, seed: int):
    """A freshly initialised ECAPA-TDNN with the checkpoint's widths, seeded like a training run's start (eval mode)."""
    from lgl_helpers.core import models
    from lgl_helpers.reproducibility import seed_everything

    trained = models.load_encoder(checkpoint)
    seed_everything(seed)
    return models.ECAPATDNN(trained.channels, trained.mfa_channels).eval()


def check_untrained_sample(value, n_items: int | None = None, source: str = "") -> int:
    """``untrained_sample``: -1 (every utterance), 0 (no comparison) or a sample of 2 to ``n_items``
    utterances (k-means needs at least two clusters, hence two utterances)."""
    rule = "-1 (every utterance), 0 (no untrained-encoder comparison) or a number of utterances >= 2"
    check_int("untrained_sample", value, -1, rule)
    check("untrained_sample", value, value != 1, rule)
    if n_items is not None and value > n_items:
        where = f" in {source}" if source else ""
        raise ValueError(f"untrained_sample={value} is larger than the number of utterances N={n_items}{where}")
    return int(value)


def sample_n_clusters(n_clusters: int, n_sample: int, n_total: int) -> int:
    """k for a sample of ``n_sample`` of ``n_total`` utterances: ``n_clusters`` scaled to it (rounded), at least 2."""
    return max(2, round(n_clusters * n_sample / n_total))


def sample_index(n_total: int, n_sample: int, seed: int) -> np.ndarray:
    """(n_sample,) int64: distinct positions in ``[0, n_total)``, drawn with ``seed``, sorted (list order)."""
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n_sample, replace=False)).astype(np.int64)


def compare_untrained(
    cfg: ClusteringConfig, inputs: ClusteringInputs, result: ClusteringResult
) -> UntrainedBaseline | None:
    """Notebook 02's floor: :func:`untrained_encoder` (``cfg.seed``) clustered into ``out_dir/untrained``.

    result: the trained encoder's clustering of every utterance (``result.emb`` (N, 192) in list order).
    ``cfg.untrained_sample`` -1 (or N) clusters every utterance with ``cfg.n_clusters``; 0 returns None
    and writes nothing; S < N embeds only S utterances drawn with ``cfg.seed`` (:func:`sample_index`),
    clusters them with k = :func:`sample_n_clusters` and the same other k-means settings, and clusters
    the trained encoder's embeddings of the same S utterances (taken from ``result``, not embedded
    again) with the same k: NMI depends on the number of utterances and on k, so only that pair compares.
    """
    n_total = len(inputs.entries)
    size = check_untrained_sample(cfg.untrained_sample, n_total)
    if size == 0:
        log.info("untrained-encoder comparison skipped (untrained_sample = 0)")
        return None
    encoder = untrained_encoder(inputs.init_model, cfg.seed)
    out_dir = inputs.out_dir / "untrained"
    if size in (-1, n_total):
        untrained = cluster_from_config(cfg, inputs, encoder=encoder, out_dir=out_dir)
        return UntrainedBaseline(np.arange(n_total), n_total, cfg.n_clusters, None, result.quality, untrained.quality)
    index = sample_index(n_total, size, cfg.seed)
    k = sample_n_clusters(cfg.n_clusters, size, n_total)
    sample = dataclasses.replace(inputs, entries=[inputs.entries[i] for i in index])
    untrained = cluster_from_config(cfg, sample, encoder=encoder, out_dir=out_dir, n_clusters=k)
    trained = _trained_on_sample(cfg, result, index, k, sample.speakers)
    log.info(
        "on a sample of %d of %d utterances, k = %d: NMI %.4f trained, %.4f untrained",
        size,
        n_total,
        k,
        trained["nmi"],
        untrained.quality["nmi"],
    )
    return UntrainedBaseline(index, n_total, k, cfg.seed, trained, untrained.quality)


def finished(out_dir: str | os.PathLike) -> bool:
    """Whether notebook 02 has finished in ``out_dir``: its clustering's files, and a ``quality.json``
    with the untrained-encoder comparison (written last, :func:`~lgl_helpers.clustering.quality.write_quality`)."""
    out_dir = Path(out_dir)
    names = ("embeddings.npy", "centroids.npy", "quality.json", "pseudo_labels.txt")
    return all((out_dir / name).is_file() for name in names) and "untrained_nmi" in read_json(out_dir / "quality.json")


def load_clustering(inputs: ClusteringInputs) -> ClusteringResult:
    """The finished clustering in ``inputs.out_dir``, read as :func:`cluster_from_config` returned it; nothing written."""
    out_dir = inputs.out_dir
    quality = read_json(out_dir / "quality.json")
    labels = read_pseudo_labels(out_dir / "pseudo_labels.txt", inputs.entries, quality["kmeans"]["n_clusters"])
    emb = np.load(out_dir / "embeddings.npy", allow_pickle=False)
    centroids = np.load(out_dir / "centroids.npy", allow_pickle=False)
    log.info("read the finished clustering of %s: NMI %.4f", out_dir, quality["nmi"])
    return ClusteringResult(labels, emb, centroids, quality, out_dir, True)


def load_untrained(
    cfg: ClusteringConfig, inputs: ClusteringInputs, result: ClusteringResult
) -> UntrainedBaseline | None:
    """:func:`compare_untrained`'s result of a finished notebook 02, from ``out_dir/untrained/quality.json``
    and ``quality.json`` (None: skipped); on a sample, the trained encoder's k-means of the same sample is
    run again in memory (seconds; its NMI equals the recorded ``trained_nmi``). Nothing is written."""
    record = result.quality
    if record.get("untrained_nmi") is None:
        return None
    untrained = read_json(inputs.out_dir / "untrained" / "quality.json")
    n_total = len(inputs.entries)
    sample = record.get("untrained_sample")
    if sample is None:
        return UntrainedBaseline(np.arange(n_total), n_total, record["kmeans"]["n_clusters"], None, record, untrained)
    index = sample_index(n_total, sample["n_utterances"], sample["seed"])
    trained = _trained_on_sample(cfg, result, index, sample["n_clusters"], inputs.speakers[index])
    return UntrainedBaseline(index, n_total, sample["n_clusters"], sample["seed"], trained, untrained)


def _trained_on_sample(
    cfg: ClusteringConfig, result: ClusteringResult, index: np.ndarray, k: int, speakers: np.ndarray
) -> dict:
    """Quality of the trained encoder's embeddings ``result.emb[index]`` clustered into ``k`` with the
    k-means settings the clustering used."""
    settings = result.quality["kmeans"]
    labels, _ = kmeans_pseudo_labels(
        result.emb[index],
        k,
        n_iter=settings["n_iter"],
        seed=settings["seed"],
        max_points_per_centroid=settings["max_points_per_centroid"],
        use_gpu=cfg.use_gpu,
    )
    return clustering_quality(labels, speakers, k)
