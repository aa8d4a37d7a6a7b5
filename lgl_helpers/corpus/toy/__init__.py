"""The embedded toy corpus: a small VoxCeleb-shaped data set made on the spot, no downloads.

It stands in for VoxCeleb2 dev (training), VoxCeleb1 (test trials), MUSAN and RIRS_NOISES in the
exact on-disk layout of docs/method.md ("Data and list formats"), so every later stage runs through the
same code paths on it as on the real data:

    OUT/train/<idNNNNN>/<session>/<nnnnn>.wav          training speakers (id0....)
    OUT/test/<idNNNNN>/<session>/<nnnnn>.wav           disjoint test speakers (id1....)
    OUT/musan_split/<noise|speech|music>/<subset>/<recording>/<chunk>.wav
    OUT/rirs/simulated_rirs/<room type>/<room>/<rir>.wav
    OUT/lists/train_list.txt                           <speaker> <path under train/> <seconds>
    OUT/lists/trials.txt                               <1|0> <path under test/> <path under test/>
    OUT/lists/trials_hard.txt                          the same, cross-session targets and same-sex non-targets

Speech comes from a source-filter model computed frame by frame in the STFT domain:
- per speaker (stable traits): median f0 and intonation range, vocal-tract length (scales all
  formants), per-formant and per-vowel idiosyncrasies, formant bandwidths, spectral tilt,
  breathiness, jitter, shimmer, speaking rate and a fixed spectral notch;
- per utterance (content): a random syllable sequence of vowels, fricatives, stops, nasals and
  approximants with coarticulated formant tracks, stress, phrase pauses and declination;
- per session (channel): an EQ curve with band limits, a coloured noise floor at a session SNR,
  mild reverberation, a level, and a small shift of the speaker's pitch and vocal effort.
So two utterances of one session share speaker *and* channel, and a model has to learn the speaker
rather than the channel to match cross-session trials. MUSAN-like "speech" is talk by speakers
outside both splits (babble once the augmentation mixes several), "noise" and "music" are
synthetic, and the RIRs are exponentially decaying noise tails with early reflections.

Every file is drawn from its own ``numpy.random.Generator`` seeded by (seed, split, speaker,
session, utterance), so generation is parallel and order independent: the same config gives
byte-identical files with any number of workers.
"""

from lgl_helpers.corpus.toy.config import PRESETS, ToyConfig
from lgl_helpers.corpus.toy.layout import (
    MANIFEST,
    MUSAN_CATEGORIES,
    is_toy_corpus,
    read_toy_manifest,
    toy_eval_trials,
    toy_paths,
)
from lgl_helpers.corpus.toy.voices import speaker_traits
from lgl_helpers.corpus.toy.writer import generate_toy_corpus

__all__ = [
    "MANIFEST",
    "MUSAN_CATEGORIES",
    "PRESETS",
    "ToyConfig",
    "generate_toy_corpus",
    "is_toy_corpus",
    "read_toy_manifest",
    "speaker_traits",
    "toy_eval_trials",
    "toy_paths",
]
