"""Per-item outcomes, kept compactly: which images a model got right, which samples the judge accepted.

A paired comparison of two runs (:func:`trainer.compare.paired`) needs each run's outcome on every
item they share, not only the fraction. 0/1 outcomes pack into bits, compress well (most are 1 or
most are 0) and fit an MLflow tag: 10,000 CIFAR test images take about 1.7 kB as text. The text is
``<n>:<base64 of zlib of the packed bits>``, so a reader knows the count without decoding.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np

# Names of the parts an evaluation writes (trainer.train: items.json), by the metric they count.
FILE = "items.json"


def encode(outcomes: np.ndarray | list[bool]) -> str:
    """0/1 outcomes (bools, or numbers 0 and 1) as ``n:base64``."""
    bits = np.asarray(outcomes).astype(bool).ravel()
    packed = np.packbits(bits)
    return f"{len(bits)}:{base64.b64encode(zlib.compress(packed.tobytes(), 9)).decode('ascii')}"


def decode(text: str) -> np.ndarray:
    """The outcomes :func:`encode` wrote, as a bool array. Raises ValueError for malformed text."""
    try:
        count, _, payload = text.partition(":")
        n = int(count)
        packed = np.frombuffer(zlib.decompress(base64.b64decode(payload, validate=True)), dtype=np.uint8)
    except (ValueError, zlib.error) as e:
        raise ValueError(f"not per-item outcomes ({type(e).__name__}: {e})") from None
    bits = np.unpackbits(packed)[:n].astype(bool)
    if len(bits) != n:
        raise ValueError(f"per-item outcomes: {len(bits)} of the {n} announced")
    return bits
