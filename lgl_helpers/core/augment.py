"""Noise and reverberation augmentation of both stages (docs/method.md, "Augmentation").

The work is split in two so that it runs on a batch on the training device:

* :func:`sample_recipe` (data-loader workers, numpy): draws one augmentation — which of reverb / noise
  to apply, the room impulse response with its gain, the noise category, the noise files (Stage II
  mixes 3-8 babble files for ``speech``, Stage I one file), their SNRs and segments — and reads only
  the needed part of each noise file. The noise files are pre-scaled into one *unit noise* wave, so
  the recipe does not depend on the speech it will be mixed into.
* :func:`apply_recipe` (torch, any device): reverberates a batch by FFT convolution and adds the unit
  noise scaled by each reverberated wave's own power, which gives the SNR the recipe drew.

Stage I applies one augmentation to two segments (views A and S). As in the reference's loader, S
gets the same RIR and gain, the same noise files and the same SNRs as A, but its own random segment
of each noise file (:func:`sample_recipe_pair`), so the discriminator cannot spot "same augmentation"
from identical noise samples.

Noise files are MUSAN, either as distributed, ``<musan>/<noise|speech|music>/<subset>/<file>.wav``
(long files, read in random partial segments), or split into chunks,
``<musan>/<noise|speech|music>/<subset>/<recording>/<chunk>.wav``: in both the category is the
first folder under the root. RIRs come as the RIRS_NOISES folder
``<rirs>/simulated_rirs/<room type>/<room>/<rir>.wav`` or as the reference's single ``rir.npy`` array of
filters (K, L). Every filter is normalised to unit energy and then scaled by ``10 ** (gain_db / 10)``,
the reference's gain convention: Stage II uses a gain of 0 dB (unit energy), Stage I draws it
uniformly from [-7, 3] dB.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from lgl_helpers.core.audio import SAMPLE_RATE, AudioError, WavInfo, read_wav, read_wav_part

log = logging.getLogger(__name__)

NOISE_CATEGORIES = ("noise", "speech", "music")
# Guards the power ratios against digital silence only. The reference adds 1e-4 to both powers,
# which raises the real SNR of quiet files (a noise chunk at -40 dBFS gets 3 dB less noise than
# drawn); a floor far below any real recording keeps the drawn SNR the achieved one.
POWER_FLOOR = 1e-8
# The category is the first folder under the root in both layouts; a file's depth below the root
# tells the layouts apart.
MUSAN_LAYOUTS = {
    3: "<musan_root>/<noise|speech|music>/<subset>/<file>.wav (MUSAN as distributed)",
    4: "<musan_root>/<noise|speech|music>/<subset>/<recording>/<chunk>.wav (split into chunks)",
}
MUSAN_LAYOUT = " or ".join(MUSAN_LAYOUTS.values())
RIR_LAYOUTS = (
    "<rir_root>/simulated_rirs/<room type>/<room>/<rir>.wav",
    "<rir_root>/<room type>/<room>/<rir>.wav (rir_root = the simulated_rirs folder)",
    "a rir.npy file (or <rir_root>/rir.npy) holding a (K, L) float array of filters",
)


class AugmentError(ValueError):
    """An augmentation root that is missing, empty or wrongly laid out. The message names what was expected."""


# ----------------------------------------------------------------------------------------------
# Policies
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentPolicy:
    """What a recipe may contain and with which probabilities.

    ``outcome_probs``: probabilities of (clean, reverb only, noise only, reverb + noise).
    ``snr_db`` / ``n_files``: per category, the SNR range in dB and the range of how many files are
    mixed (each file with its own SNR, as the reference's babble). ``rir_gain_db``: gain range of the
    unit-energy RIR (the filter is multiplied by ``10 ** (gain / 10)``).
    """

    outcome_probs: tuple[float, float, float, float]
    categories: tuple[str, ...] = NOISE_CATEGORIES
    snr_db: dict = field(default_factory=lambda: {"noise": (0.0, 15.0), "speech": (13.0, 20.0), "music": (5.0, 15.0)})
    n_files: dict = field(default_factory=lambda: {"noise": (1, 1), "speech": (3, 8), "music": (1, 1)})
    rir_gain_db: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        probs = np.asarray(self.outcome_probs, dtype=np.float64)
        if probs.shape != (4,) or (probs < 0).any() or not math.isclose(probs.sum(), 1.0, abs_tol=1e-9):
            raise ValueError(f"outcome_probs={self.outcome_probs} must be 4 non-negative probabilities summing to 1")
        unknown = set(self.categories) - set(NOISE_CATEGORIES)
        if unknown or not self.categories:
            raise ValueError(f"categories={self.categories} must be a non-empty subset of {NOISE_CATEGORIES}")
        for cat in self.categories:
            low, high = self.n_files[cat]
            if not 1 <= low <= high:
                raise ValueError(f"n_files[{cat!r}]={self.n_files[cat]} must satisfy 1 <= low <= high")
            if self.snr_db[cat][0] > self.snr_db[cat][1]:
                raise ValueError(f"snr_db[{cat!r}]={self.snr_db[cat]} must be (low, high)")
        if self.rir_gain_db[0] > self.rir_gain_db[1]:
            raise ValueError(f"rir_gain_db={self.rir_gain_db} must be (low, high)")

    @property
    def p_reverb(self) -> float:
        return self.outcome_probs[1] + self.outcome_probs[3]

    @property
    def p_noise(self) -> float:
        return self.outcome_probs[2] + self.outcome_probs[3]


# Stage I: per view 0.25 reverb only, 0.25 noise only, 0.5 both; RIR gain uniform in [-7, 3] dB; one
# MUSAN file per view for every category, "speech" included (the reference's Stage I loader draws a
# single speech file, where its Stage II loader mixes 3-8 as babble).
STAGE1_POLICY = AugmentPolicy(
    outcome_probs=(0.0, 0.25, 0.25, 0.5),
    n_files={"noise": (1, 1), "speech": (1, 1), "music": (1, 1)},
    rir_gain_db=(-7.0, 3.0),
)
# Stage II: reverb with p 0.5 and noise with p 0.5, independently; RIR at unit energy.
STAGE2_POLICY = AugmentPolicy(outcome_probs=(0.25, 0.25, 0.25, 0.25), rir_gain_db=(0.0, 0.0))


# ----------------------------------------------------------------------------------------------
# Discovering the augmentation sets
# ----------------------------------------------------------------------------------------------


def _describe_folder(root: Path, limit: int = 5) -> str:
    """What is actually under ``root``: top-level entries and where wav files sit (for error messages)."""
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    depths: dict[int, int] = {}
    example = None
    for path in root.rglob("*.wav"):
        depth = len(path.relative_to(root).parts)
        depths[depth] = depths.get(depth, 0) + 1
        example = example or path.relative_to(root)
    shown = ", ".join(entries[:limit]) + (f", ... ({len(entries)} entries)" if len(entries) > limit else "")
    if not depths:
        return f"found no .wav file; top level: [{shown}]"
    where = ", ".join(f"{n} at depth {d}" for d, n in sorted(depths.items()))
    return f"found .wav files {where} (e.g. {example}); top level: [{shown}]"


def find_noise_files(musan_root: str | os.PathLike) -> dict[str, list[str]]:
    """MUSAN files by category: ``{"noise": [...], "speech": [...], "music": [...]}`` (sorted paths).

    Accepts either layout of :data:`MUSAN_LAYOUTS`, per category. Raises :class:`AugmentError` when the
    root does not exist, when any of the three categories has no file in either layout, or when one
    category holds files of both (a split copy next to the original would count every recording twice).
    """
    root = Path(musan_root)
    if not root.is_dir():
        raise AugmentError(f"musan_root {root} is not a folder; expected {MUSAN_LAYOUT}")
    found: dict[str, dict[int, list[str]]] = {cat: {depth: [] for depth in MUSAN_LAYOUTS} for cat in NOISE_CATEGORIES}
    for depth in MUSAN_LAYOUTS:
        for path in root.glob("/".join(["*"] * depth) + ".wav"):
            category = path.relative_to(root).parts[0]
            if category in found:
                found[category][depth].append(str(path))
    files: dict[str, list[str]] = {}
    for category, by_depth in found.items():
        used = [depth for depth, paths in by_depth.items() if paths]
        if len(used) > 1:
            counts = "; ".join(f"{len(by_depth[d])} as {MUSAN_LAYOUTS[d]}" for d in used)
            raise AugmentError(
                f"musan_root {root}: category {category!r} holds files of both layouts ({counts}); "
                "point musan_root at a folder with one of them"
            )
        files[category] = sorted(by_depth[used[0]]) if used else []
    missing = [cat for cat, paths in files.items() if not paths]
    if missing:
        raise AugmentError(
            f"musan_root {root}: no files for categor{'y' if len(missing) == 1 else 'ies'} {missing}; "
            f"expected {MUSAN_LAYOUT}; {_describe_folder(root)}"
        )
    return files


@dataclass
class RirSet:
    """Room impulse responses: either wav ``files`` (read on demand) or rows of a ``.npy`` array (memory-mapped)."""

    files: list[str] | None = None
    npy_path: str | None = None
    _array: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else self._filters().shape[0]

    def _filters(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.npy_path, mmap_mode="r")
        return self._array

    def __getstate__(self):
        # Workers re-open the memory map instead of receiving a pickled copy of every filter.
        return {"files": self.files, "npy_path": self.npy_path, "_array": None}

    def name(self, index: int) -> str:
        return self.files[index] if self.files is not None else f"{self.npy_path}[{index}]"

    def filter(self, index: int) -> np.ndarray:
        """RIR ``index`` as (L,) float64, not yet normalised."""
        if self.files is not None:
            return read_wav(self.files[index], check=False).astype(np.float64)
        return np.asarray(self._filters()[index], dtype=np.float64)


def _load_rir_array(path: Path) -> RirSet:
    try:
        array = np.load(path, mmap_mode="r")
    except Exception as error:  # numpy raises ValueError/OSError/UnpicklingError for non-.npy files
        raise AugmentError(f"{path}: cannot read as a .npy array ({error}); expected {RIR_LAYOUTS[2]}") from error
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1 or not np.issubdtype(array.dtype, np.floating):
        raise AugmentError(f"{path}: holds a {array.dtype} array of shape {array.shape}; expected {RIR_LAYOUTS[2]}")
    return RirSet(npy_path=str(path), _array=array)


def find_rirs(rir_root: str | os.PathLike) -> RirSet:
    """The RIR set under ``rir_root`` in any of :data:`RIR_LAYOUTS`; :class:`AugmentError` otherwise."""
    root = Path(rir_root)
    if root.is_file():
        if root.suffix != ".npy":
            raise AugmentError(
                f"rir_root {root} is a file but not a .npy array; expected one of: {'; '.join(RIR_LAYOUTS)}"
            )
        return _load_rir_array(root)
    if not root.is_dir():
        raise AugmentError(f"rir_root {root} does not exist; expected one of: {'; '.join(RIR_LAYOUTS)}")
    if (root / "rir.npy").is_file():
        return _load_rir_array(root / "rir.npy")
    for pattern in ("simulated_rirs/*/*/*.wav", "*/*/*.wav"):
        files = sorted(str(p) for p in root.glob(pattern))
        if files:
            return RirSet(files=files)
    raise AugmentError(
        f"rir_root {root}: no RIRs found; expected one of: {'; '.join(RIR_LAYOUTS)}; {_describe_folder(root)}"
    )


@dataclass
class AugmentSources:
    """The noise files and RIRs a recipe draws from; either may be None (that augmentation is then skipped)."""

    noise_files: dict[str, list[str]] | None = None
    rirs: RirSet | None = None

    @classmethod
    def from_roots(cls, musan_root: str | os.PathLike | None, rir_root: str | os.PathLike | None) -> AugmentSources:
        """Discover both sets; ``None``/``""`` roots are skipped with one warning, a bad root raises :class:`AugmentError`."""
        noise_files = find_noise_files(musan_root) if musan_root else None
        rirs = find_rirs(rir_root) if rir_root else None
        missing = [name for name, value in (("musan_root", noise_files), ("rir_root", rirs)) if value is None]
        if len(missing) == 2:
            log.warning("no augmentation roots given (musan_root, rir_root): training on clean views")
        elif missing:
            log.warning("%s not given: that augmentation is skipped, the others keep their probabilities", missing[0])
        return cls(noise_files, rirs)

    @property
    def empty(self) -> bool:
        return self.noise_files is None and self.rirs is None

    def summary(self) -> str:
        noise = (
            ", ".join(f"{len(self.noise_files[c])} {c}" for c in NOISE_CATEGORIES) if self.noise_files else "no noise"
        )
        rirs = f"{len(self.rirs)} RIRs" if self.rirs is not None else "no RIRs"
        return f"{noise}; {rirs}"


# ----------------------------------------------------------------------------------------------
# Recipes (workers, numpy)
# ----------------------------------------------------------------------------------------------


@dataclass
class Recipe:
    """One augmentation, or a batch of them after :func:`collate_recipes`.

    Single recipe (numpy): ``rir`` (Lr,) float32 — the scaled filter, ``[0.]`` when unused; ``noise``
    (T,) float32 — the *unit noise*: sum over files of ``10**(-snr/20) · noise / sqrt(mean(noise²) + floor)``,
    zeros when unused; ``has_rir`` / ``has_noise`` bool; ``category`` index into
    :data:`NOISE_CATEGORIES` (-1 = none); ``snr_db`` mean SNR of the mixed files (nan = none);
    ``rir_gain_db`` (nan = none).
    Batched (torch): the same fields with a leading batch dimension B, ``rir`` zero-padded to (B, Lr_max).
    """

    rir: np.ndarray | torch.Tensor
    noise: np.ndarray | torch.Tensor
    has_rir: bool | torch.Tensor
    has_noise: bool | torch.Tensor
    category: int | torch.Tensor = -1
    snr_db: float | torch.Tensor = float("nan")
    rir_gain_db: float | torch.Tensor = float("nan")

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Recipe:
        return Recipe(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})

    def pin_memory(self) -> Recipe:
        # Called by DataLoader(pin_memory=True) on the batched recipe.
        return Recipe(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return int(self.noise.shape[0]) if self.noise.ndim == 2 else 1


def read_segment(path: str | os.PathLike, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample segment of a wav file, reading only that part. Returns (length,) float32.

    A file shorter than ``length`` is wrap-padded from a random phase, so any length works.
    """

    def part(info: WavInfo) -> tuple[int, int]:
        if info.frames < 1:
            raise AudioError(f"{path}: has no samples")
        if info.frames >= length:
            return int(rng.integers(0, info.frames - length + 1)), length
        return 0, -1

    wave, info = read_wav_part(path, part, check=False)
    if info.frames >= length:
        return wave
    return wave[(int(rng.integers(0, info.frames)) + np.arange(length)) % info.frames]


@dataclass(frozen=True)
class _Draw:
    """The parameters of one augmentation, before any noise audio is read."""

    rir: np.ndarray  # (Lr,) float32, the scaled filter; [0.] when unused
    has_rir: bool
    rir_gain_db: float
    category: int = -1  # index into NOISE_CATEGORIES; -1 = no noise
    noise_files: tuple[str, ...] = ()
    snr_db: tuple[float, ...] = ()


def _draw(sources: AugmentSources, policy: AugmentPolicy, length: int, rng: np.random.Generator) -> _Draw:
    """Draw the outcome, the RIR with its gain and the noise files with their SNRs; reads the RIR only."""
    outcome = int(rng.choice(4, p=np.asarray(policy.outcome_probs, dtype=np.float64)))
    want_rir = outcome in (1, 3) and sources.rirs is not None
    want_noise = outcome in (2, 3) and sources.noise_files is not None
    rir = np.zeros(1, dtype=np.float32)
    gain_db = float("nan")
    if want_rir:
        index = int(rng.integers(len(sources.rirs)))
        filt = sources.rirs.filter(index)[:length]  # taps beyond the wave's length cannot reach the kept output
        energy = float(np.sum(filt**2))
        if not energy > 0:
            raise AugmentError(f"RIR {sources.rirs.name(index)} is all zeros")
        gain_db = float(rng.uniform(*policy.rir_gain_db))
        rir = (filt / math.sqrt(energy) * 10 ** (gain_db / 10)).astype(np.float32)
    if not want_noise:
        return _Draw(rir, bool(want_rir), gain_db)
    name = policy.categories[int(rng.integers(len(policy.categories)))]
    pool = sources.noise_files[name]
    low, high = policy.n_files[name]
    count = min(int(rng.integers(low, high + 1)), len(pool))
    chosen = rng.choice(len(pool), size=count, replace=False)
    snrs = rng.uniform(*policy.snr_db[name], size=count)
    return _Draw(
        rir,
        bool(want_rir),
        gain_db,
        NOISE_CATEGORIES.index(name),
        tuple(pool[int(i)] for i in chosen),
        tuple(float(snr) for snr in snrs),
    )


def _unit_noise(draw: _Draw, length: int, rng: np.random.Generator) -> np.ndarray:
    """The draw's noise files mixed at their SNRs, each from a fresh random segment. Returns (length,) float32."""
    mix = np.zeros(length, dtype=np.float64)
    for path, snr in zip(draw.noise_files, draw.snr_db):
        segment = read_segment(path, length, rng).astype(np.float64)
        mix += 10 ** (-snr / 20) * segment / math.sqrt(np.mean(segment**2) + POWER_FLOOR)
    return mix.astype(np.float32)


def _recipe(draw: _Draw, length: int, rng: np.random.Generator) -> Recipe:
    has_noise = draw.category >= 0
    return Recipe(
        rir=draw.rir,
        noise=_unit_noise(draw, length, rng),
        has_rir=draw.has_rir,
        has_noise=has_noise,
        category=draw.category,
        snr_db=float(np.mean(draw.snr_db)) if has_noise else float("nan"),
        rir_gain_db=draw.rir_gain_db,
    )


def sample_recipe(sources: AugmentSources, policy: AugmentPolicy, length: int, rng: np.random.Generator) -> Recipe:
    """Draw one augmentation for ``length``-sample waves and read the audio it needs. Returns a single :class:`Recipe`.

    An augmentation whose source set is missing is dropped from the drawn outcome (e.g. without RIRs,
    "reverb + noise" becomes "noise only" and "reverb only" becomes clean).
    """
    return _recipe(_draw(sources, policy, length, rng), length, rng)


def sample_recipe_pair(
    sources: AugmentSources, policy: AugmentPolicy, length: int, rng: np.random.Generator
) -> tuple[Recipe, Recipe]:
    """One augmentation for two segments, as the reference's Stage I applies it to views A and S.

    Both recipes share the outcome, the RIR and its gain, the noise category, files and SNRs; the
    second reads a fresh random segment of each noise file (the reference loads the noise file again,
    from a new random start). Returns two single :class:`Recipe`; the first equals what
    :func:`sample_recipe` returns for the same generator state.
    """
    draw = _draw(sources, policy, length, rng)
    return _recipe(draw, length, rng), _recipe(draw, length, rng)


def clean_recipe(length: int) -> Recipe:
    """The identity augmentation for ``length``-sample waves."""
    return Recipe(np.zeros(1, dtype=np.float32), np.zeros(length, dtype=np.float32), False, False)


def collate_recipes(recipes: Sequence[Recipe]) -> Recipe:
    """Stack single recipes into a batched one (torch tensors on the CPU; ``rir`` zero-padded to the longest)."""
    rir_len = max(len(r.rir) for r in recipes)
    rir = np.zeros((len(recipes), rir_len), dtype=np.float32)
    for row, recipe in enumerate(recipes):
        rir[row, : len(recipe.rir)] = recipe.rir
    return Recipe(
        rir=torch.from_numpy(rir),
        noise=torch.from_numpy(np.stack([r.noise for r in recipes])),
        has_rir=torch.tensor([r.has_rir for r in recipes], dtype=torch.bool),
        has_noise=torch.tensor([r.has_noise for r in recipes], dtype=torch.bool),
        category=torch.tensor([r.category for r in recipes], dtype=torch.int64),
        snr_db=torch.tensor([r.snr_db for r in recipes], dtype=torch.float32),
        rir_gain_db=torch.tensor([r.rir_gain_db for r in recipes], dtype=torch.float32),
    )


# ----------------------------------------------------------------------------------------------
# Applying recipes (torch, training device)
# ----------------------------------------------------------------------------------------------


def fft_convolve(wave: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """Causal convolution truncated to the input length (``scipy.signal.convolve(x, h, 'full')[:T]``, batched).

    wave: (B, T), rir: (B, Lr) → (B, T). The FFT size is a power of two ≥ T + Lr - 1, so the circular
    convolution does not wrap into the kept samples.
    """
    length = wave.shape[-1]
    n_fft = 1 << (length + rir.shape[-1] - 2).bit_length()
    spectrum = torch.fft.rfft(wave.float(), n=n_fft) * torch.fft.rfft(rir.float(), n=n_fft)
    return torch.fft.irfft(spectrum, n=n_fft)[..., :length]


def apply_recipe(wave: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Augment a batch: reverb by FFT convolution, then add the unit noise scaled to the reverberated wave's power.

    wave: (B, T) float32; recipe: batched, on the same device, with ``noise`` (B, T). Returns (B, T)
    float32. The achieved SNR of each mixed file is its drawn SNR.
    """
    if wave.dim() != 2 or recipe.noise.shape != wave.shape:
        raise ValueError(f"wave {tuple(wave.shape)} and recipe noise {tuple(recipe.noise.shape)} must both be (B, T)")
    out = wave.float()
    if bool(recipe.has_rir.any()):
        rows = recipe.has_rir.nonzero().squeeze(1)
        out = out.clone()
        out[rows] = fft_convolve(out[rows], recipe.rir[rows])
    if bool(recipe.has_noise.any()):
        power = out.pow(2).mean(dim=1, keepdim=True)
        scale = torch.where(recipe.has_noise[:, None], (power + POWER_FLOOR).sqrt(), torch.zeros_like(power))
        out = out + scale * recipe.noise
    return out


def describe_recipe(recipe: Recipe, index: int) -> str:
    """One line naming the augmentation of item ``index`` of a batched recipe (for notebook captions)."""
    parts = []
    if bool(recipe.has_rir[index]):
        parts.append(f"reverb {float(recipe.rir_gain_db[index]):+.1f} dB")
    if bool(recipe.has_noise[index]):
        name = NOISE_CATEGORIES[int(recipe.category[index])]
        parts.append(f"{name} {float(recipe.snr_db[index]):.1f} dB SNR")
    return " + ".join(parts) if parts else "clean"


def segment_samples(frames: int) -> int:
    """Samples of a crop of ``frames`` feature frames: ``frames · 160 + 240`` (one 25 ms window plus hops)."""
    return int(frames) * (SAMPLE_RATE // 100) + 240
