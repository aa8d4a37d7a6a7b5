"""The method's building blocks: audio I/O, datasets and augmentation, ECAPA-TDNN, losses, the gate and
stopping rules, batched embedding and the verification metrics. Nothing here knows about notebooks or runs."""
