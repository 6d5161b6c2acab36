"""Types of the native extension (native/src/lib.rs, built by maturin as ``mlbuild._native``)."""

from typing import Final, final

import numpy as np
from numpy.typing import NDArray
from typing_extensions import Buffer

__all__ = ["TREE_FORMAT", "Hasher", "hash_file", "hash_tree", "nms"]

TREE_FORMAT: Final[str]

def hash_file(path: str) -> tuple[int, str, str]:
    """(size, sha256 hex, blake3 hex) of a file's bytes."""

def hash_tree(path: str) -> tuple[int, str, str]:
    """(size, sha256 hex, blake3 hex) of a tree's canonical serialisation."""

@final
class Hasher:
    def __init__(self) -> None: ...
    def update(self, data: Buffer) -> None: ...
    def finish(self) -> tuple[int, str, str]:
        """(size, sha256 hex, blake3 hex); a second call raises ValueError."""

def nms(
    boxes: Buffer | NDArray[np.float32],
    scores: Buffer | NDArray[np.float32],
    classes: Buffer | NDArray[np.int64],
    iou_threshold: float,
    max_detections: int,
) -> list[int]:
    """Kept indices of a per-class greedy NMS, by descending score (at most max_detections; 0: all)."""
