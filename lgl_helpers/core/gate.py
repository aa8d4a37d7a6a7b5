"""Stage II's stopping rule and loss gate (docs/method.md, "The loss gate and how it is chosen", "Stopping rule").

- :func:`phase_should_stop` / :func:`best_index`: a phase (T or L) ends when, after at least
  ``min_evals`` evaluations, the last ``patience`` EERs are all strictly worse than the best EER
  before them; the phase's best epoch is then carried forward. Both compare EERs (%) rounded to
  0.01 by default, as the reference does: its ``check_clustering`` (``Stage2/tools.py``) decides on
  the EERs it wrote to ``score.txt`` as ``"%2.2f"`` and read back, so a near-tie is a tie there.
- :func:`auto_gate`: the automatic gate (an addition to the reference's fixed gates): the valley of
  the bimodal per-sample loss histogram, where reliable pseudo labels form a low-loss peak and
  unreliable ones a high-loss tail (:func:`valley_gate` also says whether the valley or Otsu's rule placed it).
- :func:`gmm_gate`: the gate of DLG-LC (Han et al., Interspeech 2022): a two-component Gaussian
  mixture on the log losses, the gate where the two posteriors are equal; without two separated
  modes the valley rule, with the reason.

The gate tuner of notebook 04 lives in :mod:`lgl_helpers.notebook.gate_tuner`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

MIN_DIP = 0.05  # relative depth of the density valley below the lower peak for auto_gate to use it
# The high-loss peak must hold this fraction of the low peak's density: a bump in the sparse far tail of a
# spike-and-tail histogram (no second mode) is no peak of unreliable labels.
MIN_PEAK_RATIO = 0.1
# The reference writes each EER (%) to score.txt with "%2.2f" and its stopping rule reads them back.
REFERENCE_EER_DECIMALS = 2


def comparable_eers(eers: Sequence[float], decimals: int | None = REFERENCE_EER_DECIMALS) -> list[float]:
    """EERs (%) as the stopping rule and the best epoch compare them.

    ``decimals``: rounded to this many decimals exactly as ``"%.{decimals}f"`` prints them (the
    reference's score.txt round trip); None = the raw floats. Raises ValueError on a non-finite EER.
    """
    values = [float(e) for e in eers]
    bad = [i for i, e in enumerate(values) if not math.isfinite(e)]
    if bad:
        raise ValueError(f"eers must be finite; evaluation(s) {bad} are {[values[i] for i in bad]}")
    if decimals is None:
        return values
    return [float(f"{e:.{decimals}f}") for e in values]


def phase_should_stop(
    eers: Sequence[float], min_evals: int = 4, patience: int = 3, decimals: int | None = REFERENCE_EER_DECIMALS
) -> bool:
    """The stopping rule of a Stage II phase.

    ``eers``: the phase's validation EERs in evaluation order, compared as :func:`comparable_eers`
    with ``decimals``. True when at least ``min_evals`` evaluations exist and each of the last
    ``patience`` EERs is strictly greater than the best (lowest) EER among the evaluations before
    them. A tie with that best is *not* worse, so it keeps the phase going. With
    ``len(eers) <= patience`` there is no earlier best and the phase never stops, whatever
    ``min_evals`` says.
    """
    if min_evals < 1:
        raise ValueError(f"min_evals={min_evals} must be at least 1")
    if patience < 1:
        raise ValueError(f"patience={patience} must be at least 1")
    values = comparable_eers(eers, decimals)
    if len(values) < min_evals or len(values) <= patience:
        return False
    best_before = min(values[:-patience])
    return all(e > best_before for e in values[-patience:])


def best_index(eers: Sequence[float], decimals: int | None = REFERENCE_EER_DECIMALS) -> int:
    """Index of the lowest EER, compared as :func:`comparable_eers` with ``decimals``; on a tie the
    earliest evaluation wins (the reference's ``EERs.index(min(EERs))``, fewest epochs on noisy labels)."""
    values = comparable_eers(eers, decimals)
    if not values:
        raise ValueError("best_index needs at least one EER")
    return int(np.argmin(values))


def check_losses(per_sample_loss) -> np.ndarray:
    losses = np.asarray(per_sample_loss, dtype=np.float64).ravel()
    if losses.size == 0:
        raise ValueError("per_sample_loss is empty")
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"per_sample_loss has {int((~np.isfinite(losses)).sum())} non-finite value(s)")
    return losses


def otsu_threshold(values, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample: the histogram bin edge maximising the between-class variance.

    values: (N,). Returns a value between two bin centres, so ``values <= t`` is one class.
    """
    x = check_losses(values)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return hi
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    p = counts / counts.sum()
    w0 = np.cumsum(p)[:-1]
    w1 = 1.0 - w0
    m0 = np.cumsum(p * centres)[:-1]
    total = float((p * centres).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])


def _two_modes(x: np.ndarray, seed: int) -> tuple[float, float] | None:
    """Means of the low- and high-loss components of a two-component Gaussian mixture on the raw losses.

    None when the fit is degenerate (a component under 1 % of the weight, or equal means).
    """
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=2, covariance_type="full", n_init=2, random_state=seed)
    gmm.fit(x.reshape(-1, 1))
    means = np.sort(gmm.means_.ravel())
    if float(gmm.weights_.min()) < 0.01 or not means[1] > means[0]:
        return None
    return float(means[0]), float(means[1])


def _kde(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density (unnormalised) of ``x`` on ``grid``, bandwidth by Silverman's rule."""
    spread = min(float(x.std()), float(np.subtract(*np.percentile(x, [75, 25]))) / 1.34)
    bandwidth = 0.9 * (spread if spread > 0 else float(x.std())) * x.size**-0.2
    density = np.zeros_like(grid)
    for chunk in np.array_split(x, max(1, x.size // 2000)):
        density += np.exp(-0.5 * ((grid[:, None] - chunk[None, :]) / bandwidth) ** 2).sum(axis=1)
    return density


def _kde_valley(x: np.ndarray, split: float, max_points: int = 20_000, seed: int = 0) -> float | None:
    """Lowest density point between the two peaks of a kernel density estimate of ``x``.

    Peaks are local maxima of the density; the low peak is the highest one below ``split``, the high
    peak the highest one above it. None when either side has no peak, the high peak is under
    ``MIN_PEAK_RATIO`` of the low one, or the density between them does not dip at least ``MIN_DIP``
    below the lower peak (no valley between two modes).
    """
    if x.size > max_points:
        x = np.random.default_rng(seed).choice(x, size=max_points, replace=False)
    grid = np.linspace(float(x.min()), float(x.max()), 801)
    density = _kde(x, grid)
    padded = np.concatenate([[-np.inf], density, [-np.inf]])
    is_peak = (padded[1:-1] > padded[:-2]) & (padded[1:-1] >= padded[2:])
    below = grid <= split
    if not (is_peak & below).any() or not (is_peak & ~below).any():
        return None
    low_peak = int(np.argmax(np.where(is_peak & below, density, -np.inf)))
    high_peak = int(np.argmax(np.where(is_peak & ~below, density, -np.inf)))
    if density[high_peak] < MIN_PEAK_RATIO * density[low_peak]:
        return None
    lowest = low_peak + int(np.argmin(density[low_peak : high_peak + 1]))
    # A dip of under MIN_DIP is a wiggle of the estimate (e.g. on a flat-topped single mode), not a valley.
    if density[lowest] > (1.0 - MIN_DIP) * min(density[low_peak], density[high_peak]):
        return None
    return float(grid[lowest])


def auto_gate(per_sample_loss, seed: int = 0, max_samples: int = 200_000) -> float:
    """Gate in the valley of the bimodal per-sample loss histogram (:func:`valley_gate`'s gate)."""
    return valley_gate(per_sample_loss, seed, max_samples)[0]


def valley_gate(per_sample_loss, seed: int = 0, max_samples: int = 200_000) -> tuple[float, str]:
    """Gate in the valley of the bimodal per-sample loss histogram.

    per_sample_loss: (N,) cross-entropies of one epoch. The rule:

    1. a two-component Gaussian mixture on the raw losses (a seeded subsample of at most
       ``max_samples``) splits them into a low-loss and a high-loss side, at the midpoint of its two
       component means;
    2. a Gaussian kernel density estimate of the losses (Silverman bandwidth) gives the two peaks: the
       highest local density maximum on each side;
    3. the gate is the lowest density point between those peaks, i.e. the bottom of the valley;
    4. if the mixture is degenerate, the high-loss peak holds under 10 % of the low peak's density
       (a spike of fitted labels with a long tail, no second mode) or the density does not dip at
       least 5 % below the lower peak (a unimodal histogram), the gate falls back to Otsu's threshold.

    Returns (gate, rule): rule ``"valley"``, ``"otsu"`` or ``"constant"`` (all losses equal: keep all).

    Peaks and the valley come from the density rather than from the Gaussian components because the
    reliable peak of cross-entropies is skewed (piled up at zero with a long tail), so a Gaussian fit
    places its mean and its decision boundary inside that tail. Raw losses, not logs: the gate
    applies to raw losses, and a log scale would stretch the near-zero losses of the reliable peak
    into a spurious mode.
    """
    x = check_losses(per_sample_loss)
    if float(x.max()) <= float(x.min()):
        log.warning("auto gate: all %d losses equal %.4f; the gate keeps every sample", x.size, x[0])
        return float(x.max()), "constant"
    if x.size > max_samples:
        x = np.random.default_rng(seed).choice(x, size=max_samples, replace=False)
    modes = _two_modes(x, seed) if np.unique(x).size >= 4 else None
    if modes is not None:
        valley = _kde_valley(x, 0.5 * (modes[0] + modes[1]), seed=seed)
        if valley is not None:
            log.info("auto gate: density valley at %.4f (mixture means %.4f and %.4f)", valley, *modes)
            return valley, "valley"
    gate = otsu_threshold(x)
    log.info("auto gate: no valley between two peaks; Otsu threshold %.4f", gate)
    return gate, "otsu"


GATE_RULES = ("valley", "gmm")  # the rules gates="auto" can use (LGL's gate_rule)
# The GMM gate's fit counts as two modes only when they are this far apart (Ashman's D, in pooled
# standard deviations: D > 2 is the usual mark of a clean separation) and the smaller one holds at least
# MIN_GMM_WEIGHT of the samples.
MIN_ASHMAN_D = 2.0
MIN_GMM_WEIGHT = 0.02
LOG_LOSS_FLOOR = 1e-6  # losses are clipped here before the log: a loss of exactly 0 has no log


@dataclass
class GateChoice:
    """A gate and how it was placed.

    rule: the rule that placed it (``"gmm"``, ``"valley"``, ``"otsu"``, ``"constant"``); reason: why the
    GMM rule fell back (None when it did not, or was not asked for); mixture: the two components on
    the log losses, low-loss first, as ``{"weights", "means", "stds"}`` (None without a GMM fit).
    """

    gate: float
    rule: str
    reason: str | None = None
    mixture: dict | None = None


def _equal_posterior(weights, means, stds) -> float | None:
    """The point between the two means where ``w0 N(z; m0, s0) = w1 N(z; m1, s1)``; None if there is none."""
    (w0, w1), (m0, m1), (s0, s1) = weights, means, stds
    # log w0 - log s0 - (z-m0)^2 / 2s0^2 = log w1 - log s1 - (z-m1)^2 / 2s1^2, a quadratic a z^2 + b z + c = 0.
    a = 1 / (2 * s1**2) - 1 / (2 * s0**2)
    b = m0 / s0**2 - m1 / s1**2
    c = m1**2 / (2 * s1**2) - m0**2 / (2 * s0**2) + math.log((w0 * s1) / (w1 * s0))
    if abs(a) < 1e-12:
        roots = [-c / b] if b != 0 else []
    else:
        disc = b * b - 4 * a * c
        roots = [] if disc < 0 else [(-b + sign * math.sqrt(disc)) / (2 * a) for sign in (1, -1)]
    between = [z for z in roots if m0 < z < m1]
    return min(between) if between else None


def gmm_gate(per_sample_loss, seed: int = 0, max_samples: int = 200_000) -> GateChoice:
    """The gate where a two-component Gaussian mixture on the log losses has equal posteriors.

    per_sample_loss: (N,) losses (clipped at ``LOG_LOSS_FLOOR`` before the log). The mixture is fitted
    on a seeded subsample of at most ``max_samples``. It counts as two modes when the smaller component
    holds at least ``MIN_GMM_WEIGHT`` of the weight, the components are ``MIN_ASHMAN_D`` pooled
    standard deviations apart, and their weighted densities cross between the means; then the gate
    is ``exp`` of that crossing. Otherwise the valley rule (:func:`valley_gate`) places the gate and
    ``reason`` says why (the published code asserts here and training aborts).
    """
    x = check_losses(per_sample_loss)
    if x.size > max_samples:
        x = np.random.default_rng(seed).choice(x, size=max_samples, replace=False)
    z = np.log(np.maximum(x, LOG_LOSS_FLOOR))
    reason, mixture = None, None
    if np.unique(z).size < 4:
        reason = f"only {np.unique(z).size} distinct loss value(s)"
    else:
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(n_components=2, covariance_type="full", n_init=2, random_state=seed)
        gmm.fit(z.reshape(-1, 1))
        order = np.argsort(gmm.means_.ravel())
        weights = [float(w) for w in gmm.weights_[order]]
        means = [float(m) for m in gmm.means_.ravel()[order]]
        stds = [float(math.sqrt(v)) for v in gmm.covariances_.ravel()[order]]
        mixture = {"weights": weights, "means": means, "stds": stds}
        separation = math.sqrt(2) * (means[1] - means[0]) / math.sqrt(stds[0] ** 2 + stds[1] ** 2)
        crossing = _equal_posterior(weights, means, stds)
        if min(weights) < MIN_GMM_WEIGHT:
            reason = f"a component holds {100 * min(weights):.1f} % of the samples (< {100 * MIN_GMM_WEIGHT:.0f} %)"
        elif separation < MIN_ASHMAN_D:
            reason = f"the components overlap (Ashman's D {separation:.2f} < {MIN_ASHMAN_D:.0f})"
        elif crossing is None:
            reason = "the weighted component densities do not cross between the means"
        else:
            gate = float(math.exp(crossing))
            log.info(
                "gmm gate: %.4f where the posteriors are equal (log-loss means %.3f / %.3f, weights %.2f / %.2f, D %.2f)",
                gate,
                means[0],
                means[1],
                weights[0],
                weights[1],
                separation,
            )
            return GateChoice(gate, "gmm", None, mixture)
    gate, rule = valley_gate(x, seed, max_samples)
    log.warning("gmm gate: no two separated modes (%s); the %s rule gives %.4f", reason, rule, gate)
    return GateChoice(gate, rule, reason, mixture)
