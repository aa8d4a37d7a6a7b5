"""The list formats of the field (docs/method.md, "Data and list formats").

Training list, one utterance a line: ``<speaker id> <relative wav path> <duration in seconds>``.
Trial list, one trial a line: ``<1|0> <relative wav path A> <relative wav path B>``.
Speaker ids in the training list are used only to report clustering quality, never for training.

:mod:`~lgl_helpers.corpus.lists.formats` parses and writes both; :mod:`~lgl_helpers.corpus.lists.build`
builds a training list from a VoxCeleb-layout folder (``<root>/<speaker>/<session>/<utterance>.wav``)
and draws speaker-stratified subsets; :mod:`~lgl_helpers.corpus.lists.check` checks a list against its
audio; :mod:`~lgl_helpers.corpus.lists.voxceleb` fetches the official VoxCeleb1 trial lists.
"""

from lgl_helpers.corpus.lists.build import build_train_list, scan_wavs, subset_train_list
from lgl_helpers.corpus.lists.check import check_list, read_eval_trials
from lgl_helpers.corpus.lists.formats import (
    ListCheckError,
    ListFormatError,
    TrainEntry,
    Trial,
    read_train_list,
    read_trials,
    train_list_counts,
    write_train_list,
    write_trials,
)
from lgl_helpers.corpus.lists.voxceleb import (
    VOXCELEB_META_URLS,
    VOXCELEB_TRIAL_LISTS,
    FetchError,
    fetch_voxceleb,
    verify_trial_list,
)

__all__ = [
    "FetchError",
    "ListCheckError",
    "ListFormatError",
    "TrainEntry",
    "Trial",
    "VOXCELEB_META_URLS",
    "VOXCELEB_TRIAL_LISTS",
    "build_train_list",
    "check_list",
    "fetch_voxceleb",
    "read_eval_trials",
    "read_train_list",
    "read_trials",
    "scan_wavs",
    "subset_train_list",
    "train_list_counts",
    "verify_trial_list",
    "write_train_list",
    "write_trials",
]
