"""``lgl-kit embed``, ``verify`` and ``export``: a trained encoder reused from the command line.

    lgl-kit embed --checkpoint CKPT (FILES... | --list LIST [--root DIR]) --out emb.npy
    lgl-kit verify --checkpoint CKPT A.wav B.wav
    lgl-kit export --checkpoint CKPT --format onnx|torchscript --out FILE

``embed`` writes ``emb.npy``, (N, 192) float32 L2-normalised rows, and ``emb.keys.txt``, row i's path
on line i: for FILES one row per argument, in order (a repeated path repeats its row; each file is
embedded once); for a LIST one row per distinct path, in order of first appearance. Both are written
only after every file is embedded, each atomically. A file with a NaN or inf sample is refused; files
without signal are named in a warning (``verify`` says it in its verdict line). A LIST is a trial list (``<0|1> <a> <b>``: both sides), a training
list (``<speaker> <path> <seconds>``) or one path a line; its first line decides which, and its paths
are relative to ``--root`` (default: the current folder). The work is
:mod:`lgl_helpers.core.encoder` and :mod:`lgl_helpers.core.export`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lgl_helpers.corpus.lists.formats import (
    TRAIN_FORMAT,
    TRIAL_FORMAT,
    ListFormatError,
    numbered_fields,
    read_train_list,
    read_trials,
)
from lgl_helpers.files import atomic_save_npy, atomic_write_text

LIST_FORMATS = f"'<path>', '{TRAIN_FORMAT}' or '{TRIAL_FORMAT}'"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_audio_keys(path: str | Path) -> list[str]:
    """The audio paths a list names, each once, in order of first appearance; the first line decides the kind.

    One field: a path a line. Three fields ending in a number: a training list. Three fields starting
    with 0 or 1: a trial list (both paths of each trial). Raises ListFormatError naming ``file:line``.
    """
    first = next(iter(numbered_fields(path)), None)
    if first is None:
        raise ListFormatError(f"{path}: list is empty")
    number, fields = first
    if len(fields) == 1:
        keys = []
        for number, fields in numbered_fields(path):
            if len(fields) != 1:
                raise ListFormatError(
                    f"{path}:{number}: expected one path a line (as on line {first[0]}), got {len(fields)} fields"
                )
            keys.append(fields[0])
    elif len(fields) == 3 and _is_number(fields[2]):
        keys = [entry.path for entry in read_train_list(path)]
    elif len(fields) == 3 and fields[0] in ("0", "1"):
        keys = [rel for trial in read_trials(path) for rel in (trial.path_a, trial.path_b)]
    else:
        raise ListFormatError(f"{path}:{number}: not a list of audio files: expected {LIST_FORMATS}")
    return list(dict.fromkeys(keys))


def keys_path(out: Path) -> Path:
    """``emb.npy`` → ``emb.keys.txt``: where the row order of an embedding file goes."""
    return out.with_name(out.stem + ".keys.txt")


def _run_embed(args: argparse.Namespace) -> int:
    from lgl_helpers.core.encoder import Encoder, silence_note

    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"--out {out}: must end in .npy (the row order goes to {keys_path(out.with_suffix('.npy'))})")
    if args.files and args.list:
        raise ValueError("give audio FILES or --list LIST, not both")
    if args.root is not None and not args.list:
        raise ValueError("--root is the folder of a --list's paths; FILES are used as given")
    if args.list:
        keys = read_audio_keys(args.list)  # distinct already
        paths = [Path(args.root or ".") / key for key in keys]
    elif args.files:
        keys = list(args.files)  # row i is argument i, repeats included: a caller indexes rows by position
        paths = [Path(key) for key in dict.fromkeys(keys)]
    else:
        raise ValueError("nothing to embed: give audio FILES or --list LIST")
    encoder = Encoder.from_checkpoint(args.checkpoint, device=args.device)
    start = time.perf_counter()
    emb, silent = encoder.embed_with_silence(paths, batch_seconds=args.batch_seconds, show_progress=True)
    if len(paths) < len(keys):  # each distinct file embedded once, its row repeated
        row_of = {str(path): i for i, path in enumerate(paths)}
        emb = emb[[row_of[str(Path(key))] for key in keys]]
    seconds = time.perf_counter() - start
    # Keys first: a reader that finds the new emb.npy finds its keys already in place.
    atomic_write_text(keys_path(out), "".join(f"{key}\n" for key in keys))
    atomic_save_npy(out, emb)
    print(f"{out}: {emb.shape[0]} x {emb.shape[1]} embeddings in {seconds:.1f} s on {encoder.device}")
    print(f"{keys_path(out)}: the path of each row")
    if silent:
        print(f"warning: {silence_note(silent)}: their rows say nothing about a speaker", file=sys.stderr)
    return 0


def _add_encoder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="a kit checkpoint (best.model), a reference Stage I/II checkpoint or a bare encoder state dict",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")


def add_embed_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit embed``: embeddings of audio files (or a list's files) into emb.npy + emb.keys.txt."""
    parser = subparsers.add_parser(
        "embed",
        help="embed audio files with a trained encoder",
        description="Embed whole audio files: any format soundfile reads, mixed to mono and resampled to 16 kHz "
        "(a note in the log), batched by length. Writes OUT (.npy, N x 192 float32, L2-normalised) and "
        "OUT's .keys.txt (the path of each row), atomically. A --list is a trial list (both sides), a "
        "training list or one path a line.",
    )
    _add_encoder_options(parser)
    parser.add_argument("files", nargs="*", metavar="FILES", help="audio files to embed (or use --list)")
    parser.add_argument("--list", metavar="LIST", help=f"a list of audio files: {LIST_FORMATS} a line")
    parser.add_argument("--root", metavar="DIR", help="folder the list's paths are relative to (default: .)")
    parser.add_argument("--out", required=True, help="embeddings to write, e.g. emb.npy (keys: emb.keys.txt)")
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=240.0,
        help="padded audio per batch, the memory bound (default %(default)s)",
    )
    parser.set_defaults(func=_run_embed)
    return parser


def _run_verify(args: argparse.Namespace) -> int:
    from lgl_helpers.core.encoder import THRESHOLD_KEY, Encoder, silence_note

    encoder = Encoder.from_checkpoint(args.checkpoint, device=args.device)
    score, silent = encoder.score_with_silence(args.a, args.b)
    print(f"score {score:.6f}")
    # In the verdict line itself: a reader who looks only at accept/reject must see it.
    warning = f" - WARNING: {silence_note(silent)}, so this score says nothing about the speakers" if silent else ""
    decision = encoder.decide(score)
    if decision is None:
        print(
            f"no decision: {args.checkpoint} stores no '{THRESHOLD_KEY}' (the threshold of its validation EER){warning}"
        )
    else:
        verdict = "accept (same speaker)" if decision else "reject (different speakers)"
        print(f"{verdict} at threshold {encoder.eer_threshold:.6f}, the validation EER's{warning}")
    return 0


def add_verify_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit verify``: the cosine score of two files, and the decision when the checkpoint has a threshold."""
    parser = subparsers.add_parser(
        "verify",
        help="score two audio files: same speaker or not",
        description="Print the cosine score of two audio files and, when the checkpoint stores 'eer_threshold' "
        "(the score where its validation list's false accepts and false rejects meet), accept or reject.",
    )
    _add_encoder_options(parser)
    parser.add_argument("a", metavar="A", help="first audio file")
    parser.add_argument("b", metavar="B", help="second audio file")
    parser.set_defaults(func=_run_verify)
    return parser


def _run_export(args: argparse.Namespace) -> int:
    from lgl_helpers.core.export import PROBE_SECONDS, TOLERANCE, check_format, export_encoder
    from lgl_helpers.core.models import load_encoder

    fmt = check_format(args.format)  # before the checkpoint is read: a typo fails at once
    result = export_encoder(load_encoder(args.checkpoint), args.out, fmt)
    probe = " + ".join(f"{s:g} s" for s in PROBE_SECONDS)
    print(
        f"{result['path']}: {result['format']}, {result['bytes'] / 1e6:.1f} MB, exported in {result['export_seconds']:.1f} s"
    )
    print(
        "  inputs: wave (batch, samples) float32 at 16 kHz, lengths (batch,) int64; output: emb (batch, 192), L2-normalised"
    )
    print(
        f"  parity with PyTorch on a {probe} batch: max |diff| {result['max_abs_diff']:.1e} (tolerance {TOLERANCE:.0e})"
    )
    return 0


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit export``: the encoder as an ONNX or TorchScript file, parity-checked before it is written."""
    parser = subparsers.add_parser(
        "export",
        help="export the encoder to ONNX or TorchScript",
        description="Export the encoder, log-mel front end included, with dynamic batch and length: inputs wave "
        "(batch, samples) and lengths (batch,), output the L2-normalised embeddings. The file is "
        "checked against PyTorch on a 0.5 s + 8 s batch before it is written (atomically).",
    )
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="any checkpoint `embed` accepts")
    # Checked by the handler (export.FORMATS), so that building the parser does not import torch.
    parser.add_argument("--format", required=True, metavar="onnx|torchscript", help="onnx (onnxruntime) or torchscript")
    parser.add_argument("--out", required=True, help="file to write, e.g. encoder.onnx or encoder.pt")
    parser.set_defaults(func=_run_export)
    return parser
