"""The toy corpus's sizes and difficulty (``ToyConfig``) and its named presets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToyConfig:
    """Sizes and difficulty of the toy corpus. Every file follows from these values and ``seed``."""

    n_train_speakers: int = 48  # training speakers (ids id00001...)
    n_test_speakers: int = 30  # test speakers, disjoint from training (ids id10001...)
    sessions_per_speaker: int = 5  # "videos" per speaker, each with its own channel
    utterances_per_session: int = 5  # utterances per session
    min_seconds: float = 2.0  # utterance length drawn uniformly in [min_seconds, max_seconds]
    max_seconds: float = 4.0
    n_trials: int = 0  # half targets (a quarter same-session, the rest cross-session), half non-targets; 0 = all pairs
    n_val_speakers: int = 12  # validation speakers (ids id15001..., files in test/), disjoint from both splits
    n_val_trials: int = 0  # trials of lists/val_trials.txt, drawn like n_trials (0 = all pairs)
    musan_recordings: int = 3  # recordings per MUSAN subset (speech recordings = babble speakers)
    musan_chunks: int = 3  # chunks per recording, as musan_split cuts them
    musan_chunk_seconds: float = 5.0  # chunk length (chunks start every 60 % of it)
    rir_rooms: int = 3  # rooms per room type (small/medium/large)
    rirs_per_room: int = 3  # impulse responses per room
    rir_max_seconds: float = 1.0  # longest impulse response (large rooms)
    channel_strength: float = 0.7  # scales the session EQ, noise floor and reverb (difficulty knob)
    seed: int = 0

    def __post_init__(self):
        positive = (
            "n_train_speakers",
            "n_test_speakers",
            "utterances_per_session",
            "musan_recordings",
            "musan_chunks",
            "rir_rooms",
            "rirs_per_room",
        )
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ToyConfig.{name}={getattr(self, name)!r} must be a positive integer")
        for name in ("n_trials", "n_val_speakers", "n_val_trials"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"ToyConfig.{name}={getattr(self, name)!r} must be a non-negative integer")
        if not isinstance(self.sessions_per_speaker, int) or self.sessions_per_speaker < 2:
            raise ValueError(
                f"ToyConfig.sessions_per_speaker={self.sessions_per_speaker!r} must be >= 2 "
                "(cross-session target trials need two sessions)"
            )
        if self.n_train_speakers > 9999 or self.n_test_speakers > 4999 or self.n_val_speakers > 4999:
            raise ValueError("ToyConfig: at most 9999 training and 4999 test and validation speakers (ids idNNNNN)")
        if self.n_val_speakers == 1:
            raise ValueError("ToyConfig.n_val_speakers=1 must be 0 (no validation list) or >= 2 (non-targets)")
        if not 0.5 <= self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"ToyConfig: need 0.5 <= min_seconds ({self.min_seconds}) <= max_seconds ({self.max_seconds})"
            )
        if self.musan_chunk_seconds < 1.0:
            raise ValueError(f"ToyConfig.musan_chunk_seconds={self.musan_chunk_seconds} must be >= 1")
        if not 0.1 <= self.rir_max_seconds <= 4.0:
            raise ValueError(f"ToyConfig.rir_max_seconds={self.rir_max_seconds} must be in [0.1, 4]")
        if not 0.0 <= self.channel_strength <= 3.0:
            raise ValueError(f"ToyConfig.channel_strength={self.channel_strength} must be in [0, 3]")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ToyConfig.seed={self.seed!r} must be a non-negative integer")
        self.trial_plan("test")  # raises if a split cannot hold its trials
        if self.n_val_speakers:
            self.trial_plan("val")

    def n_speakers(self, split: str) -> int:
        """How many speakers ``split`` (train, test or val) has."""
        return {"train": self.n_train_speakers, "test": self.n_test_speakers, "val": self.n_val_speakers}[split]

    def trial_plan(self, split: str = "test") -> tuple[int, int, int] | None:
        """(same-session targets, cross-session targets, non-targets) of the ``split``'s trial list, or None
        for all pairs; raises if the split is too small."""
        n_trials = self.n_trials if split == "test" else self.n_val_trials
        if n_trials == 0:
            return None
        n_target = n_trials // 2
        n_same = n_target // 4  # most VoxCeleb1 target trials pair different videos
        n_cross = n_target - n_same
        n_non = n_trials - n_target
        s, u, k = self.n_speakers(split), self.sessions_per_speaker, self.utterances_per_session
        available_same = s * u * k * (k - 1) // 2
        available_cross = s * (u * (u - 1) // 2) * k * k
        n_files = s * u * k
        available_non = n_files * (n_files - u * k) // 2
        name = "n_trials" if split == "test" else "n_val_trials"
        for kind, need, have in (
            ("same-session target", n_same, available_same),
            ("cross-session target", n_cross, available_cross),
            ("non-target", n_non, available_non),
        ):
            if need > have:
                raise ValueError(
                    f"ToyConfig.{name}={n_trials} needs {need} distinct {kind} trials but the {split} split "
                    f"({s} speakers x {u} sessions x {k} utterances) holds only {have}; lower {name} or enlarge the split"
                )
        return n_same, n_cross, n_non

    @classmethod
    def tiny(cls, **overrides) -> ToyConfig:
        """A corpus for unit tests: generates in about a second."""
        values = dict(
            n_train_speakers=8,
            n_test_speakers=4,
            sessions_per_speaker=2,
            utterances_per_session=3,
            min_seconds=1.0,
            max_seconds=2.0,
            n_trials=60,
            n_val_speakers=0,
            musan_recordings=1,
            musan_chunks=2,
            musan_chunk_seconds=2.0,
            rir_rooms=1,
            rirs_per_room=2,
            rir_max_seconds=0.4,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def small(cls, **overrides) -> ToyConfig:
        """The CI pipeline's corpus: tiny utterances but 40 training speakers, enough for a model to generalise."""
        values = dict(n_train_speakers=40, n_test_speakers=10, n_trials=200)
        values.update(overrides)
        return cls.tiny(**values)

    @classmethod
    def preset(cls, name: str, **overrides) -> ToyConfig:
        """``"default"`` (the demo corpus), ``"small"`` (the CI pipeline) or ``"tiny"`` (unit tests), with field overrides on top."""
        if name == "default":
            return cls(**overrides)
        if name == "tiny":
            return cls.tiny(**overrides)
        if name == "small":
            return cls.small(**overrides)
        raise ValueError(f"unknown toy preset {name!r}; choose one of {PRESETS}")


PRESETS = ("default", "small", "tiny")
