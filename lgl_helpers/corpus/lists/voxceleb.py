"""The official VoxCeleb1 trial lists (Vox1-O, Vox1-E, Vox1-H, cleaned): download and verification."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from lgl_helpers.files import atomic_write_bytes

log = logging.getLogger(__name__)


VOXCELEB_META_URLS = (
    "https://mm.kaist.ac.kr/datasets/voxceleb/meta/",
    "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/",
)


# name → (trials, sha256 or None): Vox1-O (cleaned), Vox1-E (cleaned), Vox1-H (cleaned)
VOXCELEB_TRIAL_LISTS = {
    "veri_test2.txt": (37611, "0bc0a0fe3e557f1a75fb71e566d862d460709e80a4fe28e80e49bc0ab3a536ea"),
    "list_test_all2.txt": (579818, None),
    "list_test_hard2.txt": (550894, None),
}


class FetchError(RuntimeError):
    """A trial list that could not be downloaded or did not verify; the message says what to do."""


def verify_trial_list(name: str, data: bytes, expected: dict | None = None) -> None:
    """Raise :class:`FetchError` unless ``data`` is the official ``name``: line count, format, sha256."""
    expected = VOXCELEB_TRIAL_LISTS if expected is None else expected
    n_trials, sha256 = expected[name]
    lines = [line for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if len(lines) != n_trials:
        raise FetchError(f"{name}: has {len(lines)} trials, expected {n_trials}")
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise FetchError(f"{name}:{number}: not a '<1|0> <wav A> <wav B>' trial line: {line[:80]!r}")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise FetchError(f"{name}: sha256 {hashlib.sha256(data).hexdigest()} differs from the official {sha256}")


def fetch_voxceleb(
    out_dir: str | os.PathLike = "data_lists/voxceleb",
    *,
    names: Iterable[str] | None = None,
    base_urls: Iterable[str] = VOXCELEB_META_URLS,
    timeout: float = 60.0,
    opener: Callable | None = None,
    expected: dict | None = None,
) -> dict[str, Path]:
    """Download and verify the official VoxCeleb1 trial lists into ``out_dir``; returns name → path.

    Each mirror in ``base_urls`` is tried in turn; a file is written (atomically) only once it has
    the expected number of trials and, for Vox1-O, the expected sha256. A file already present and
    valid is kept. ``opener(url, timeout=...)`` returns a file-like response (default
    ``urllib.request.urlopen``). Raises :class:`FetchError` naming every URL tried when a list
    cannot be had, e.g. offline.
    """
    opener = opener or urllib.request.urlopen
    expected = VOXCELEB_TRIAL_LISTS if expected is None else expected
    names = list(expected) if names is None else list(names)
    unknown = [n for n in names if n not in expected]
    if unknown:
        raise ValueError(f"names={unknown}: unknown trial lists; known are {list(expected)}")
    out_dir = Path(out_dir)
    fetched = {}
    for name in names:
        target = out_dir / name
        if target.is_file():
            try:
                verify_trial_list(name, target.read_bytes(), expected)
                log.info("%s: present and verified", target)
                fetched[name] = target
                continue
            except FetchError as error:
                log.warning("%s: present but invalid (%s); downloading again", target, error)
        failures = []
        for base in base_urls:
            url = base.rstrip("/") + "/" + name
            try:
                with opener(url, timeout=timeout) as response:
                    data = response.read()
                verify_trial_list(name, data, expected)
            except (urllib.error.URLError, OSError, ValueError, FetchError) as error:
                failures.append(f"{url}: {getattr(error, 'reason', None) or error}")
                continue
            atomic_write_bytes(target, data)
            log.info("%s: downloaded from %s and verified", target, url)
            fetched[name] = target
            break
        else:
            raise FetchError(
                f"could not fetch {name} (are you offline?). Tried:\n  "
                + "\n  ".join(failures)
                + f"\nDownload it by hand from one of these addresses into {out_dir}/ and run the command again."
            )
    return fetched
