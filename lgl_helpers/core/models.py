"""The speaker encoder of every stage: ECAPA-TDNN with its waveform front end (docs/method.md, "Encoder").

The layer layout and state-dict key names equal the reference implementation's ``Network.*`` tensors,
so a checkpoint trained with the reference code loads unchanged. Besides the plain forward pass used
for training (fixed-length crops), the encoder has a masked pass for padded batches of different
lengths: each item then gets exactly the embedding it gets alone, which lets evaluation and clustering
batch full-length utterances.

Kit checkpoints are dicts ``{"format": "lgl-kit", "channels": C, "mfa_channels": M, "encoder": state_dict, ...extra}``.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torchaudio

log = logging.getLogger(__name__)

KIT_FORMAT = "lgl-kit"
EMB_DIM = 192
N_MELS = 80
HOP_LENGTH = 160
REFERENCE_MFA_CHANNELS = 1536
# What save_encoder writes; extras may not reuse these keys.
CHECKPOINT_KEYS = ("format", "channels", "mfa_channels", "encoder")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None, n_valid: torch.Tensor | None) -> torch.Tensor:
    """Mean over time. x: (B, C, T); mask: (B, 1, T) float or None; n_valid: (B, 1, 1). Returns (B, C, 1)."""
    if mask is None:
        return x.mean(dim=2, keepdim=True)
    return (x * mask).sum(dim=2, keepdim=True) / n_valid


class SEModule(nn.Module):
    """Squeeze-excitation: time mean → 1×1 conv (bottleneck) → ReLU → BN → 1×1 conv → sigmoid gate."""

    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        # Index 0 (the pooling) keeps the reference's key numbering `se.1`, `se.3`, `se.4`.
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool1d(1),
            nn.Conv1d(channels, bottleneck, kernel_size=1, padding=0),
            nn.ReLU(),
            nn.BatchNorm1d(bottleneck),
            nn.Conv1d(bottleneck, channels, kernel_size=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, n_valid: torch.Tensor | None = None):
        """x: (B, C, T) → (B, C, T); with ``mask`` the squeeze averages valid frames only."""
        gate = _masked_mean(x, mask, n_valid)
        for layer in list(self.se)[1:]:
            gate = layer(gate)
        return x * gate


class Bottle2neck(nn.Module):
    """SE-Res2Net block: 1×1 conv → Res2Net split into ``scale`` branches (dilated convs) → 1×1 conv → SE, + residual."""

    def __init__(self, inplanes: int, planes: int, kernel_size: int, dilation: int, scale: int = 8):
        super().__init__()
        width = int(math.floor(planes / scale))
        self.conv1 = nn.Conv1d(inplanes, width * scale, kernel_size=1)
        self.bn1 = nn.BatchNorm1d(width * scale)
        self.nums = scale - 1
        num_pad = math.floor(kernel_size / 2) * dilation
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, kernel_size=kernel_size, dilation=dilation, padding=num_pad)
            for _ in range(self.nums)
        )
        self.bns = nn.ModuleList([nn.BatchNorm1d(width) for _ in range(self.nums)])
        self.conv3 = nn.Conv1d(width * scale, planes, kernel_size=1)
        self.bn3 = nn.BatchNorm1d(planes)
        self.relu = nn.ReLU()
        self.width = width
        self.se = SEModule(planes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, n_valid: torch.Tensor | None = None):
        """x: (B, C, T) → (B, C, T).

        With ``mask`` (B, 1, T), every input of a dilated conv is zero beyond an item's length, so the
        conv's zero padding sees what it sees for the item alone. Frames beyond the length hold
        garbage on output; only pointwise layers and masked statistics read them afterwards.
        """
        residual = x
        out = self.bn1(self.relu(self.conv1(x)))
        if mask is not None:
            out = out * mask
        spx = torch.split(out, self.width, 1)
        branches = []
        for i in range(self.nums):
            sp = spx[i] if i == 0 else sp + spx[i]  # noqa: F821 (sp is bound at i == 0)
            sp = self.bns[i](self.relu(self.convs[i](sp)))
            if mask is not None:
                sp = sp * mask
            branches.append(sp)
        branches.append(spx[self.nums])
        out = self.bn3(self.relu(self.conv3(torch.cat(branches, dim=1))))
        out = self.se(out, mask, n_valid)
        return out + residual


class PreEmphasis(nn.Module):
    """y[t] = x[t] - coef·x[t-1], with the first sample reflected (x[-1] = x[1]). (B, T) → (B, T)."""

    def __init__(self, coef: float = 0.97):
        super().__init__()
        self.coef = coef
        # The reference's filter, kept as a buffer so its checkpoints load key for key.
        self.register_buffer("flipped_filter", torch.tensor([[[-coef, 1.0]]], dtype=torch.float32))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # The filter's two taps as a shift and a multiply-add: the same float32 values as the reference's
        # conv1d (tests/test_models.py), which on a CPU spends 6-14x as long on its single channel.
        previous = torch.cat([wave[:, 1:2], wave[:, :-1]], dim=1)
        past_tap, present_tap = self.flipped_filter.view(2)
        return wave * present_tap + previous * past_tap


def mel_front_end() -> nn.Sequential:
    """The encoder's waveform front end: pre-emphasis, then an 80-band mel power spectrogram (25 ms / 10 ms).

    wave (B, T) float32 at 16 kHz → mel power (B, 80, T // 160 + 1). Its two parts are the encoder's
    ``torchfbank.0`` and ``torchfbank.1``, the reference's state-dict names.
    """
    return nn.Sequential(
        PreEmphasis(),
        torchaudio.transforms.MelSpectrogram(
            sample_rate=16000,
            n_fft=512,
            win_length=400,
            hop_length=HOP_LENGTH,
            f_min=20,
            f_max=7600,
            window_fn=torch.hamming_window,
            n_mels=N_MELS,
        ),
    )


def log_mel(front_end: nn.Module, wave: torch.Tensor) -> torch.Tensor:
    """wave (B, T) → the encoder's input features: log-mel (B, 80, T // 160 + 1) with each bin's mean over time removed."""
    feats = (front_end(wave) + 1e-6).log()
    return feats - feats.mean(dim=-1, keepdim=True)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN speaker encoder with the log-mel front end inside. wave (B, T) float32 at 16 kHz → emb (B, 192).

    ``channels`` is C (512 in Stage I and Stage II, 1024 in the paper's last iteration).
    ``mfa_channels`` is M, the width of the multi-layer feature aggregation (layer4) and of the pooling
    (1536 in the reference, whatever C is). It dominates the cost of a small encoder: at C=128 the
    layers from layer4 on take about 90 % of the multiply-adds, so CPU profiles narrow it.
    """

    def __init__(self, channels: int = 512, mfa_channels: int = REFERENCE_MFA_CHANNELS):
        super().__init__()
        if channels < 8 or channels % 8:
            raise ValueError(f"channels={channels} must be a positive multiple of 8 (Res2Net scale 8)")
        if mfa_channels < 8:
            raise ValueError(f"mfa_channels={mfa_channels} must be at least 8")
        self.channels = channels
        self.mfa_channels = mfa_channels
        c, m = channels, mfa_channels
        self.conv1 = nn.Conv1d(N_MELS, c, kernel_size=5, stride=1, padding=2)
        self.relu = nn.ReLU()
        self.bn1 = nn.BatchNorm1d(c)
        self.layer1 = Bottle2neck(c, c, kernel_size=3, dilation=2, scale=8)
        self.layer2 = Bottle2neck(c, c, kernel_size=3, dilation=3, scale=8)
        self.layer3 = Bottle2neck(c, c, kernel_size=3, dilation=4, scale=8)
        self.layer4 = nn.Conv1d(3 * c, m, kernel_size=1)
        self.torchfbank = mel_front_end()
        self.attention = nn.Sequential(
            nn.Conv1d(3 * m, 256, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(256),
            nn.Tanh(),
            nn.Conv1d(256, m, kernel_size=1),
            nn.Softmax(dim=2),
        )
        self.bn5 = nn.BatchNorm1d(2 * m)
        self.fc6 = nn.Linear(2 * m, EMB_DIM)
        self.bn6 = nn.BatchNorm1d(EMB_DIM)

    def _log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """wave: (B, T) → mean-normalised log-mel (B, 80, T // 160 + 1)."""
        return log_mel(self.torchfbank, wave)

    def _padded_log_mel(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a zero-padded batch, equal per item to ``_log_mel`` of the item alone and zero beyond its frames.

        wave: (B, T); lengths: (B,) samples. Returns feats (B, 80, T // 160 + 1) and mask (B, 1, F) float.
        Pre-emphasis only looks back, so the batch pass is exact within each item; the STFT's reflect
        padding is rebuilt from each item's own ends (a gather), then framed without centring.
        """
        spec = self.torchfbank[1].spectrogram
        half = spec.n_fft // 2
        pre = self.torchfbank[0](wave)
        last = (lengths - 1).unsqueeze(1)
        src = (torch.arange(wave.shape[1] + 2 * half, device=wave.device) - half).abs().unsqueeze(0)
        src = torch.where(src > last, 2 * last - src, src)
        # Indices past an item's own padded end only feed frames that the mask drops.
        src = src.clamp(0, wave.shape[1] - 1)
        power = torchaudio.functional.spectrogram(
            pre.gather(1, src),
            pad=0,
            window=spec.window,
            n_fft=spec.n_fft,
            hop_length=spec.hop_length,
            win_length=spec.win_length,
            power=spec.power,
            normalized=spec.normalized,
            center=False,
            pad_mode=spec.pad_mode,
            onesided=spec.onesided,
        )
        feats = (self.torchfbank[1].mel_scale(power) + 1e-6).log()
        n_frames = lengths // spec.hop_length + 1
        mask = (torch.arange(feats.shape[-1], device=wave.device) < n_frames.unsqueeze(1)).to(feats.dtype).unsqueeze(1)
        mean = (feats * mask).sum(dim=-1, keepdim=True) / n_frames.to(feats.dtype).view(-1, 1, 1)
        return (feats - mean) * mask, mask

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """wave: (B, T) float32 → emb (B, 192), not normalised.

        ``lengths`` (B,) gives each item's valid samples in a zero-padded batch (eval mode only); each
        item's embedding then equals the one of ``forward(wave[i:i+1, :lengths[i]])`` to float
        tolerance. Without ``lengths`` the pass is the reference's, used for fixed-length training crops.
        """
        if wave.dim() != 2:
            raise ValueError(f"wave must be (batch, samples), got shape {tuple(wave.shape)}")
        mask = n_valid = None
        # The log-mel front end stays float32 under a bf16 autocast: its log of small powers would lose digits.
        with torch.no_grad(), torch.autocast(wave.device.type, enabled=False):
            if lengths is None:
                x = self._log_mel(wave)
            else:
                if self.training:
                    raise ValueError(
                        "forward(wave, lengths) is for eval mode: BatchNorm in train mode would see the padding"
                    )
                lengths = torch.as_tensor(lengths, device=wave.device).long()
                shortest = self.torchfbank[1].spectrogram.n_fft // 2 + 1  # the STFT's reflect padding needs this
                if (
                    lengths.shape != (wave.shape[0],)
                    or int(lengths.min()) < shortest
                    or int(lengths.max()) > wave.shape[1]
                ):
                    raise ValueError(
                        f"lengths must be ({wave.shape[0]},) with values in [{shortest}, {wave.shape[1]}], "
                        f"got {lengths.tolist()}"
                    )
                x, mask = self._padded_log_mel(wave, lengths)
                n_valid = mask.sum(dim=-1, keepdim=True)
        x = self.bn1(self.relu(self.conv1(x)))
        x1 = self.layer1(x, mask, n_valid)
        x2 = self.layer2(x + x1, mask, n_valid)
        x3 = self.layer3(x + x1 + x2, mask, n_valid)
        x = self.relu(self.layer4(torch.cat((x1, x2, x3), dim=1)))
        x = self._attentive_stats_pool(x, mask, n_valid)
        return self.bn6(self.fc6(self.bn5(x)))

    def _attentive_stats_pool(self, x: torch.Tensor, mask: torch.Tensor | None, n_valid: torch.Tensor | None):
        """Attentive statistics pooling with global context. x: (B, M, T) → (B, 2M): [weighted mean, std]."""
        t = x.shape[-1]
        if mask is None:
            mean = x.mean(dim=2, keepdim=True)
            var = x.var(dim=2, keepdim=True)
        else:
            x = x * mask
            mean = _masked_mean(x, mask, n_valid)
            # Unbiased, like torch.var in the plain pass (forward admits no item under 2 frames).
            var = (((x - mean) * mask) ** 2).sum(dim=2, keepdim=True) / (n_valid - 1)
        std = var.clamp(min=1e-4).sqrt()
        global_x = torch.cat((x, mean.expand(-1, -1, t), std.expand(-1, -1, t)), dim=1)
        if mask is None:
            w = self.attention(global_x)
        else:
            scores = self.attention[:5](global_x)
            w = scores.masked_fill(mask == 0, float("-inf")).softmax(dim=2)
        mu = torch.sum(x * w, dim=2)
        sg = torch.sqrt((torch.sum((x**2) * w, dim=2) - mu**2).clamp(min=1e-4))
        return torch.cat((mu, sg), dim=1)


def _strip_module(key: str) -> str:
    # DataParallel inserts a `module` component; the reference strips it anywhere in the key.
    return ".".join(part for part in key.split(".") if part != "module")


def _encoder_state(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Encoder tensors (keys without prefix) and the widths a kit checkpoint records, from any supported layout."""
    if isinstance(obj, dict) and obj.get("format") == KIT_FORMAT:
        if not isinstance(obj.get("encoder"), dict):
            raise ValueError(f"{path}: kit checkpoint has no 'encoder' state dict")
        state = {_strip_module(k): v for k, v in obj["encoder"].items()}
        return state, {k: int(obj[k]) for k in ("channels", "mfa_channels") if obj.get(k) is not None}
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise ValueError(f"{path}: not a state dict or kit checkpoint (got {type(obj).__name__})")
    state = {_strip_module(k): v for k, v in obj.items()}
    if any(k.startswith("Network.") for k in state):
        # Reference Stage I/II checkpoint: the encoder lives under `Network.`; `Loss.*`, `AATNet.*` are not the encoder.
        return {k[len("Network.") :]: v for k, v in state.items() if k.startswith("Network.")}, {}
    if "conv1.weight" in state:
        return state, {}
    raise ValueError(
        f"{path}: no encoder tensors found (expected keys 'Network.*', a kit checkpoint, or a bare encoder state dict)"
    )


# Lines of torch's weights-only refusal that address its own users (its advice to load with weights_only=False
# would run whatever code an untrusted file holds), not what is wrong with the file.
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation of torch.load")


def load_weights(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain values only, never code.

    A file that holds anything else (a pickled object, a malicious payload) or is no checkpoint raises
    ValueError, one line naming the file and what torch found, without torch's advice to retry with
    ``weights_only=False``: that advice is wrong for a file of unknown origin.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = [
            line.strip().removeprefix("WeightsUnpickler error:").strip()
            for line in str(error).splitlines()
            if line.strip() and not line.strip().startswith(_TORCH_ADVICE)
        ]
        reason = "; ".join(line for line in found if line) or "unsupported content"
        raise ValueError(
            f"{path}: refused: not a weights-only torch checkpoint ({reason}); the kit loads only tensors and "
            "plain values from a checkpoint, never code"
        ) from None
    except Exception as error:  # torch raises RuntimeError, OSError, EOFError ... for truncated or foreign files
        raise ValueError(f"{path}: cannot load as a torch checkpoint, truncated or not one ({error})") from None


def load_encoder(path: str | os.PathLike, channels: int | None = None) -> ECAPATDNN:
    """Load an encoder, in eval mode on the CPU, from a reference Stage I / Stage II checkpoint or a kit checkpoint.

    C is read from ``conv1.weight`` (out channels) and M from ``layer4.weight`` unless given;
    ``channels`` that disagree with the file are an error. Every encoder tensor must be present with
    the right shape: a missing, unexpected or misshaped tensor raises ``ValueError`` naming it and the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file does not exist")
    obj = load_weights(path)
    state, stored = _encoder_state(obj, path)
    for key in ("conv1.weight", "layer4.weight"):
        if key not in state:
            raise ValueError(f"{path}: encoder tensor '{key}' is missing")
    widths = {"channels": int(state["conv1.weight"].shape[0]), "mfa_channels": int(state["layer4.weight"].shape[0])}
    for name, value in stored.items():
        if value != widths[name]:
            tensor = "conv1.weight" if name == "channels" else "layer4.weight"
            raise ValueError(f"{path}: '{name}' says {value} but {tensor} has {widths[name]} out channels")
    if channels is not None and int(channels) != widths["channels"]:
        raise ValueError(f"{path}: channels={channels} was requested but the checkpoint has C={widths['channels']}")
    model = ECAPATDNN(**widths)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ValueError(f"{path}: encoder tensor(s) missing: {', '.join(missing)}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ValueError(f"{path}: unexpected encoder tensor(s): {', '.join(unexpected)}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{path}: encoder tensor '{key}' has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)
    log.info("loaded encoder C=%d M=%d from %s", widths["channels"], widths["mfa_channels"], path)
    return model.eval()


def encoder_like(checkpoint: dict) -> ECAPATDNN:
    """A fresh encoder with the widths a kit checkpoint records (M defaults to the reference's 1536)."""
    return ECAPATDNN(int(checkpoint["channels"]), int(checkpoint.get("mfa_channels", REFERENCE_MFA_CHANNELS)))


def save_encoder(path: str | os.PathLike, model: ECAPATDNN, extra: dict | None = None) -> Path:
    """Write a kit checkpoint ``{"format": "lgl-kit", "channels": C, "mfa_channels": M, "encoder": state_dict, **extra}`` atomically.

    ``extra`` holds plain values (numbers, strings, lists, dicts, tensors) so that the file stays
    loadable with ``weights_only=True``; it may not reuse the three reserved keys.
    """
    from lgl_helpers.files import atomic_torch_save

    extra = dict(extra or {})
    clash = set(CHECKPOINT_KEYS) & set(extra)
    if clash:
        raise ValueError(f"extra uses reserved checkpoint key(s) {sorted(clash)}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    widths = {"channels": int(model.channels), "mfa_channels": int(model.mfa_channels)}
    return atomic_torch_save({"format": KIT_FORMAT, **widths, "encoder": state, **extra}, path)
