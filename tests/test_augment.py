"""Augmentation: discovery of MUSAN / RIR sets, recipes (probabilities, SNR, determinism) and their batched application."""

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lgl_helpers.core import augment
from lgl_helpers.core.audio import read_wav, write_wav
from lgl_helpers.core.augment import (
    STAGE1_POLICY,
    STAGE2_POLICY,
    AugmentError,
    AugmentPolicy,
    AugmentSources,
    apply_recipe,
    collate_recipes,
    fft_convolve,
    find_noise_files,
    find_rirs,
    sample_recipe,
)

LENGTH = 8000


@pytest.fixture(scope="module")
def sources(tiny_corpus):
    return AugmentSources.from_roots(tiny_corpus / "musan_split", tiny_corpus / "rirs")


def _loud_waves(n, length=LENGTH, seed=0):
    """(n, length) speech-like test signals with power far above the reference's power floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000
    waves = [0.4 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.1 * rng.standard_normal(length) for _ in range(n)]
    return torch.tensor(np.stack(waves), dtype=torch.float32)


# --- discovery --------------------------------------------------------------------------------


def test_tiny_corpus_sets_are_found_in_both_rir_forms(tiny_corpus, tmp_path):
    noise = find_noise_files(tiny_corpus / "musan_split")
    assert set(noise) == {"noise", "speech", "music"} and all(noise.values())
    assert all(path.split("/")[-4] == cat for cat, paths in noise.items() for path in paths)
    folder = find_rirs(tiny_corpus / "rirs")
    assert len(folder) > 0 and folder.files == find_rirs(tiny_corpus / "rirs" / "simulated_rirs").files
    filters = np.random.default_rng(0).standard_normal((5, 300)).astype(np.float32)
    np.save(tmp_path / "rir.npy", filters)
    for root in (tmp_path / "rir.npy", tmp_path):
        rirs = find_rirs(root)
        assert len(rirs) == 5
        np.testing.assert_allclose(rirs.filter(3), filters[3])


def _musan_as_distributed(root, seconds=6.0, seed=0, per_category=2):
    """MUSAN as its authors ship it: ``<root>/<category>/<subset>/<file>.wav``, long white-noise files."""
    rng = np.random.default_rng(seed)
    for category in ("noise", "speech", "music"):
        for k in range(per_category):
            write_wav(
                root / category / "sub" / f"{category}-{k:04d}.wav", 0.3 * rng.standard_normal(int(seconds * 16000))
            )
    return root


def test_musan_as_distributed_is_found_and_read_in_segments(tmp_path):
    root = _musan_as_distributed(tmp_path / "musan")
    (root / "README").write_text("MUSAN")  # the distribution's non-audio files are ignored
    noise = find_noise_files(root)
    assert {cat: [p.split("/")[-3:] for p in paths] for cat, paths in noise.items()} == {
        cat: [[cat, "sub", f"{cat}-{k:04d}.wav"] for k in range(2)] for cat in ("noise", "speech", "music")
    }
    sources = AugmentSources.from_roots(root, "")
    policy = replace(STAGE2_POLICY, outcome_probs=(0.0, 0.0, 1.0, 0.0))
    recipe = sample_recipe(sources, policy, LENGTH, np.random.default_rng(0))
    assert recipe.has_noise and recipe.noise.shape == (LENGTH,)  # 0.5 s out of 6 s files


def test_both_musan_layouts_give_the_same_categories(tiny_corpus, tmp_path):
    split = find_noise_files(tiny_corpus / "musan_split")
    distributed = find_noise_files(_musan_as_distributed(tmp_path / "musan"))
    assert set(split) == set(distributed) == set(augment.NOISE_CATEGORIES)
    assert all(len(Path(p).relative_to(tiny_corpus / "musan_split").parts) == 4 for ps in split.values() for p in ps)


def test_wrong_musan_layout_names_expected_and_found(tmp_path):
    for category in ("noise", "speech", "music"):  # the subset level missing
        write_wav(tmp_path / "musan" / category / "0.wav", np.zeros(1600))
    expected = (
        r"expected <musan_root>/<noise\|speech\|music>/<subset>/<file>\.wav \(MUSAN as distributed\) or "
        r"<musan_root>/<noise\|speech\|music>/<subset>/<recording>/<chunk>\.wav \(split into chunks\).*"
        r"found \.wav files 3 at depth 2"
    )
    with pytest.raises(AugmentError, match=expected):
        find_noise_files(tmp_path / "musan")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AugmentError, match="found no .wav file"):
        find_noise_files(tmp_path / "empty")
    with pytest.raises(AugmentError, match="is not a folder"):
        find_noise_files(tmp_path / "nowhere")


def test_a_category_in_both_layouts_is_an_error(tmp_path):
    root = _musan_as_distributed(tmp_path / "musan", seconds=1.0)
    write_wav(root / "speech" / "sub" / "speech-0000" / "0.wav", np.zeros(1600))  # a split copy beside the original
    with pytest.raises(AugmentError, match=r"category 'speech' holds files of both layouts \(2 as .*1 as "):
        find_noise_files(root)


def test_missing_category_is_named(tiny_corpus, tmp_path):
    for category in ("noise", "music"):
        write_wav(tmp_path / category / "sub" / "rec" / "0.wav", np.zeros(1600))
    with pytest.raises(AugmentError, match=r"no files for category \['speech'\]"):
        find_noise_files(tmp_path)


def test_wrong_rir_layouts(tmp_path):
    write_wav(tmp_path / "flat" / "rir1.wav", np.ones(100) * 0.1)
    with pytest.raises(AugmentError, match=r"simulated_rirs/<room type>/<room>/<rir>\.wav.*depth 1"):
        find_rirs(tmp_path / "flat")
    np.save(tmp_path / "bad.npy", np.zeros(10))
    with pytest.raises(AugmentError, match=r"shape \(10,\).*\(K, L\)"):
        find_rirs(tmp_path / "bad.npy")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(AugmentError, match="not a .npy"):
        find_rirs(tmp_path / "x.txt")


def test_no_roots_gives_clean_views_and_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="lgl_helpers"):
        sources = AugmentSources.from_roots("", None)
    assert sources.empty
    assert sum("clean views" in r.message for r in caplog.records) == 1


# --- recipes ----------------------------------------------------------------------------------


def _outcome(recipe):
    return int(recipe.has_rir) + 2 * int(recipe.has_noise)  # 0 clean, 1 reverb, 2 noise, 3 both


@pytest.mark.parametrize("policy, expected", [(STAGE1_POLICY, (0.0, 0.25, 0.25, 0.5)), (STAGE2_POLICY, (0.25,) * 4)])
def test_outcome_frequencies_follow_the_policy(sources, policy, expected):
    rng = np.random.default_rng(0)
    outcomes = np.array([_outcome(sample_recipe(sources, policy, 2000, rng)) for _ in range(600)])
    freq = np.bincount(outcomes, minlength=4) / len(outcomes)
    np.testing.assert_allclose(freq, expected, atol=0.06)
    if policy is STAGE1_POLICY:
        assert freq[0] == 0.0


def test_drawn_snr_and_gain_stay_in_range(sources):
    rng = np.random.default_rng(1)
    recipes = [sample_recipe(sources, STAGE1_POLICY, 2000, rng) for _ in range(300)]
    for recipe in recipes:
        if recipe.has_noise:
            low, high = STAGE1_POLICY.snr_db[augment.NOISE_CATEGORIES[recipe.category]]
            assert low <= recipe.snr_db <= high
        if recipe.has_rir:
            assert -7.0 <= recipe.rir_gain_db <= 3.0
            # unit energy times the reference's gain factor 10 ** (gain / 10)
            np.testing.assert_allclose(
                np.sum(recipe.rir.astype(np.float64) ** 2), 10 ** (recipe.rir_gain_db / 5), rtol=1e-4
            )
    assert {r.category for r in recipes if r.has_noise} == {0, 1, 2}
    stage2 = [sample_recipe(sources, STAGE2_POLICY, 2000, rng) for _ in range(50)]
    for recipe in (r for r in stage2 if r.has_rir):
        np.testing.assert_allclose(np.sum(recipe.rir.astype(np.float64) ** 2), 1.0, rtol=1e-4)


def test_same_seed_same_recipe(sources):
    first = sample_recipe(sources, STAGE1_POLICY, LENGTH, np.random.default_rng(42))
    again = sample_recipe(sources, STAGE1_POLICY, LENGTH, np.random.default_rng(42))
    other = sample_recipe(sources, STAGE1_POLICY, LENGTH, np.random.default_rng(43))
    for name in ("rir", "noise"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not (np.array_equal(first.noise, other.noise) and np.array_equal(first.rir, other.rir))


def test_stage1_speech_noise_is_one_file_stage2_speech_is_babble(sources):
    """The reference's Stage I loader mixes one MUSAN speech file per view; its Stage II loader 3-8 (babble)."""
    assert STAGE1_POLICY.n_files == {"noise": (1, 1), "speech": (1, 1), "music": (1, 1)}
    assert STAGE2_POLICY.n_files == {"noise": (1, 1), "speech": (3, 8), "music": (1, 1)}
    speech_only = replace(STAGE1_POLICY, outcome_probs=(0.0, 0.0, 1.0, 0.0), categories=("speech",))
    rng = np.random.default_rng(11)
    recipes = collate_recipes([sample_recipe(sources, speech_only, LENGTH, rng) for _ in range(6)])
    clean = _loud_waves(6)
    added = apply_recipe(clean, recipes) - clean
    achieved = 10 * torch.log10(clean.pow(2).mean(1) / added.pow(2).mean(1))
    # one file: the achieved SNR is the drawn one, inside the speech range (babble would sit ~5-9 dB lower)
    torch.testing.assert_close(achieved, recipes.snr_db, atol=0.05, rtol=0)
    assert bool(((recipes.snr_db >= 13.0) & (recipes.snr_db <= 20.0)).all())


def _locate(wave, unit):
    """Start of the segment of ``wave`` that ``unit`` is a positive multiple of (by cross-correlation)."""
    n = len(wave) + len(unit)
    corr = np.fft.irfft(np.fft.rfft(wave, n) * np.conj(np.fft.rfft(unit, n)), n)[: len(wave) - len(unit) + 1]
    return int(np.argmax(corr))


def test_recipe_pair_shares_files_snr_and_rir_but_not_the_noise_segment(tiny_corpus, tmp_path):
    """View S of the reference: A's noise file, SNR and RIR, but a fresh random crop of that noise file."""
    root = _musan_as_distributed(tmp_path / "musan", seconds=3.0, per_category=1)
    sources = AugmentSources.from_roots(root, tiny_corpus / "rirs")
    files = {cat: read_wav(paths[0]).astype(np.float64) for cat, paths in sources.noise_files.items()}
    policy = replace(STAGE1_POLICY, outcome_probs=(0.0, 0.0, 0.0, 1.0))  # reverb and noise in every recipe
    length, moved = 4000, 0
    for seed in range(8):
        first, second = augment.sample_recipe_pair(sources, policy, length, np.random.default_rng(seed))
        alone = sample_recipe(sources, policy, length, np.random.default_rng(seed))
        np.testing.assert_array_equal(first.noise, alone.noise)  # the first of a pair is sample_recipe's
        np.testing.assert_array_equal(first.rir, second.rir)
        assert (first.category, first.snr_db, first.rir_gain_db) == (second.category, second.snr_db, second.rir_gain_db)
        wave = files[augment.NOISE_CATEGORIES[first.category]]
        starts = []
        for recipe in (first, second):
            unit = recipe.noise.astype(np.float64)
            start = _locate(wave, unit)
            segment = wave[start : start + length]
            # the same file at the same SNR: unit noise = 10^(-snr/20) · segment / rms(segment)
            expected = 10 ** (-recipe.snr_db / 20) * segment / np.sqrt(np.mean(segment**2) + augment.POWER_FLOOR)
            np.testing.assert_allclose(unit, expected, rtol=1e-4, atol=1e-6)
            starts.append(start)
        moved += starts[0] != starts[1]
    assert moved == 8  # a fresh crop each time (44,001 possible starts)


def test_missing_rirs_drop_reverb_only(tiny_corpus):
    noise_only = AugmentSources.from_roots(tiny_corpus / "musan_split", None)
    rng = np.random.default_rng(0)
    outcomes = {_outcome(sample_recipe(noise_only, STAGE1_POLICY, 2000, rng)) for _ in range(100)}
    assert outcomes == {0, 2}  # "reverb only" became clean, "both" became noise only


# --- application ------------------------------------------------------------------------------


@pytest.mark.parametrize("category, snr", [("noise", 0.0), ("music", 7.5), ("noise", 15.0)])
def test_achieved_snr_matches_the_drawn_snr(sources, category, snr):
    policy = AugmentPolicy(
        outcome_probs=(0.0, 0.0, 1.0, 0.0),
        categories=(category,),
        snr_db={**STAGE1_POLICY.snr_db, category: (snr, snr)},
    )
    rng = np.random.default_rng(3)
    recipes = collate_recipes([sample_recipe(sources, policy, LENGTH, rng) for _ in range(4)])
    clean = _loud_waves(4)
    noisy = apply_recipe(clean, recipes)
    achieved = 10 * torch.log10(clean.pow(2).mean(1) / (noisy - clean).pow(2).mean(1))
    torch.testing.assert_close(achieved, torch.full((4,), snr), atol=0.05, rtol=0)


def test_babble_mixes_several_files(sources):
    policy = AugmentPolicy(
        outcome_probs=(0.0, 0.0, 1.0, 0.0),
        categories=("speech",),
        n_files={**STAGE1_POLICY.n_files, "speech": (3, 3)},
        snr_db={**STAGE1_POLICY.snr_db, "speech": (13.0, 13.0)},
    )
    recipe = collate_recipes([sample_recipe(sources, policy, LENGTH, np.random.default_rng(0))])
    clean = _loud_waves(1)
    added = apply_recipe(clean, recipe) - clean
    # three files each at 13 dB: the sum lies well above one file's power (uncorrelated → about 3x)
    ratio_db = 10 * torch.log10(clean.pow(2).mean() / added.pow(2).mean())
    assert 13.0 - 10 * np.log10(3) - 2.0 < float(ratio_db) < 13.0 - 1.0


def test_fft_convolution_equals_direct_convolution_and_keeps_length():
    rng = np.random.default_rng(0)
    wave = rng.standard_normal((3, 1000))
    rir = rng.standard_normal((3, 1500))  # longer than the wave: only the first T outputs are kept
    out = fft_convolve(torch.tensor(wave, dtype=torch.float32), torch.tensor(rir, dtype=torch.float32))
    assert out.shape == (3, 1000)
    expected = np.stack([np.convolve(w, h)[:1000] for w, h in zip(wave, rir)])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-3)


def test_reverb_output_length_and_clean_rows_untouched(sources):
    rng = np.random.default_rng(5)
    reverb = [
        sample_recipe(sources, replace(STAGE2_POLICY, outcome_probs=(0.0, 1.0, 0.0, 0.0)), LENGTH, rng)
        for _ in range(2)
    ]
    recipes = collate_recipes(reverb + [augment.clean_recipe(LENGTH)])
    waves = _loud_waves(3)
    out = apply_recipe(waves, recipes)
    assert out.shape == waves.shape
    torch.testing.assert_close(out[2], waves[2], rtol=0, atol=0)
    for row in range(2):
        expected = np.convolve(waves[row].numpy().astype(np.float64), reverb[row].rir.astype(np.float64))[:LENGTH]
        np.testing.assert_allclose(out[row].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_same_recipe_applies_identically_to_two_segments(sources):
    """A recipe does not depend on the wave: reverb is the same linear filter, noise the same wave at each wave's own SNR."""
    rng = np.random.default_rng(7)
    recipes = collate_recipes([sample_recipe(sources, STAGE1_POLICY, LENGTH, rng) for _ in range(6)])
    first, second = _loud_waves(6, seed=1), 0.3 * _loud_waves(6, seed=2)
    out_first, out_second = apply_recipe(first, recipes), apply_recipe(second, recipes)
    only_reverb = replace(recipes, has_noise=torch.zeros(6, dtype=torch.bool))
    torch.testing.assert_close(
        apply_recipe(first + second, only_reverb),
        apply_recipe(first, only_reverb) + apply_recipe(second, only_reverb),
        rtol=1e-4,
        atol=1e-5,
    )
    for out, wave in ((out_first, first), (out_second, second)):
        reverberated = apply_recipe(wave, only_reverb)
        unit = (out - reverberated) / (reverberated.pow(2).mean(1, keepdim=True) + augment.POWER_FLOOR).sqrt()
        torch.testing.assert_close(unit, recipes.noise, rtol=1e-3, atol=1e-4)
    assert bool(recipes.has_rir.any()) and bool(recipes.has_noise.any())
