"""Every remote face in one picture: a tile per participant, laid out in a near-square grid.

The sink has one size for the whole call (a virtual camera or an mp4 cannot change size), so the
canvas is fixed and the tiles shrink as participants come: one face fills it, 2–4 make a 2×2
grid, 5–6 a 3×2 one. A tile shows the face, or a line saying why there is none yet (waiting for
its source state, or refused: another model), with the participant's name under it. Called from
the render thread (compose) and the event loop (tiles come and go): a lock keeps them apart.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np

#: Longest name or note drawn on a tile (characters).
MAX_LABEL = 32
_BACKGROUND = (24, 24, 24)
_TILE = (48, 48, 48)


def layout(count: int) -> tuple[int, int]:
    """(columns, rows) of the grid for ``count`` tiles: the smallest near-square that holds them."""
    if count <= 0:
        return 1, 1
    columns = math.ceil(math.sqrt(count))
    return columns, math.ceil(count / columns)


def printable(text: str) -> str:
    """``text`` as OpenCV can draw it (printable ASCII), cut to MAX_LABEL: a peer's name is arbitrary Unicode."""
    cleaned = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return cleaned if len(cleaned) <= MAX_LABEL else cleaned[:MAX_LABEL - 1] + "~"


@dataclass
class Tile:
    """One participant's place in the grid."""

    label: str
    """Its name, drawn under the face."""
    frame: np.ndarray | None = None
    """The newest rendered face (RGB), or None before the first."""
    note: str = "waiting for the face"
    """Shown instead of a face when there is none, or over it when refused."""
    refused: bool = False
    """Its source state was refused: the note replaces the face."""


class Grid:
    """Tiles by feed id, in the order they came, composed into a ``width``×``height`` RGB picture."""

    def __init__(self, width: int, height: int) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"the grid must be at least 16×16 pixels, got {width}×{height}")
        self.width, self.height = width, height
        self._tiles: dict[int, Tile] = {}
        self._lock = threading.Lock()

    def add(self, face: int, label: str) -> None:
        with self._lock:
            self._tiles.setdefault(face, Tile(printable(label)))

    def remove(self, face: int) -> bool:
        """Take a face out of the grid; whether it was there."""
        with self._lock:
            return self._tiles.pop(face, None) is not None

    def faces(self) -> list[int]:
        with self._lock:
            return list(self._tiles)

    def set_frame(self, face: int, frame: np.ndarray) -> bool:
        """The face's newest frame; False when the face has left the grid meanwhile."""
        with self._lock:
            tile = self._tiles.get(face)
            if tile is None:
                return False
            tile.frame, tile.refused = frame, False
            return True

    def refuse(self, face: int, reason: str) -> None:
        """Show the face as refused (its source state cannot be used here) instead of a face."""
        with self._lock:
            tile = self._tiles.get(face)
            if tile is not None:
                tile.frame, tile.refused, tile.note = None, True, printable(f"refused: {reason}")

    def tile(self, face: int) -> Tile | None:
        with self._lock:
            tile = self._tiles.get(face)
            return None if tile is None else Tile(tile.label, tile.frame, tile.note, tile.refused)

    def compose(self) -> np.ndarray:
        """The picture now: every tile in its cell, faces scaled to fit, names under them."""
        with self._lock:
            tiles = list(self._tiles.values())
        canvas = np.empty((self.height, self.width, 3), np.uint8)
        canvas[:] = _BACKGROUND
        columns, rows = layout(len(tiles))
        cell_w, cell_h = self.width // columns, self.height // rows
        side = min(cell_w, cell_h)
        for index, tile in enumerate(tiles):
            x0 = (index % columns) * cell_w + (cell_w - side) // 2
            y0 = (index // columns) * cell_h + (cell_h - side) // 2
            canvas[y0:y0 + side, x0:x0 + side] = _tile_picture(tile, side)
        return canvas


def _tile_picture(tile: Tile, side: int) -> np.ndarray:
    if tile.frame is not None and not tile.refused:
        picture = cv2.resize(tile.frame, (side, side), interpolation=cv2.INTER_AREA
                             if tile.frame.shape[0] > side else cv2.INTER_LINEAR)
    else:
        picture = np.empty((side, side, 3), np.uint8)
        picture[:] = _TILE
        _text(picture, tile.note, side // 2, (255, 120, 120) if tile.refused else (200, 200, 200))
    _text(picture, tile.label, side - max(6, side // 24), (255, 255, 255))
    return picture


def _text(picture: np.ndarray, text: str, baseline: int, colour: tuple[int, int, int]) -> None:
    """``text`` centred on one line at ``baseline``, scaled down until it fits, outlined for any background."""
    side = picture.shape[1]
    scale = max(0.25, side / 640)
    while True:
        (width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        if width <= side - 8 or scale <= 0.25:
            break
        scale *= 0.85
    org = (max(4, (side - width) // 2), baseline)
    cv2.putText(picture, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
