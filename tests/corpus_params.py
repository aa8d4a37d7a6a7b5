"""The data parameters every stage config of the tests takes from a generated toy corpus (``tiny_corpus``)."""

from __future__ import annotations

from pathlib import Path


def tiny_data_params(corpus: Path, *, augment: bool = True) -> dict:
    """``train_list``, ``train_root``, ``test_root`` and ``trials`` of ``corpus``; with ``augment`` its MUSAN and
    RIR roots, without it ``augment=False``."""
    params = {
        "train_list": str(corpus / "lists" / "train_list.txt"),
        "train_root": str(corpus / "train"),
        "test_root": str(corpus / "test"),
        "trials": str(corpus / "lists" / "trials.txt"),
    }
    if augment:
        return params | {"musan_root": str(corpus / "musan_split"), "rir_root": str(corpus / "rirs")}
    return params | {"augment": False}
