"""Same-person vs different-people cosine similarity of SFace on the project's face crops.

Each corpus clip gives three frames (start, middle, end), each portrait one; every image is cut by
the face tracker (still mode, the crop ``adasr eval`` uses) at 256 px. Same-person pairs are images
with one identity key in manifest.tsv (different frames or files); different pairs are the rest.
Prints, per face box tried, both distributions, the ROC AUC and the error rates at OpenCV Zoo's
threshold (cosine 0.363) — the evidence for FaceBox's default and for the eval threshold.

    python benchmarks/identity_threshold.py --corpus ../shared/media/corpus
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np
import torch

from adasr.face_cropper import FaceCropper
from adasr.pretrained.sface import OPENCV_SAME_PERSON_COSINE, FaceBox, FaceIdentity
from adasr.video_io import FrameSource, read_image

SIZE = 256


def corpus_images(corpus: Path) -> list[tuple[str, str, np.ndarray]]:
    """(identity, label, RGB frame) for every readable entry of manifest.tsv."""
    out = []
    with open(corpus / "manifest.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            path = corpus / row["file"]
            if row["kind"] == "portrait":
                out.append((row["identity"], row["file"], read_image(path)))
                continue
            frames = list(FrameSource(path))
            for i in (0, len(frames) // 2, len(frames) - 1):
                out.append((row["identity"], f"{row['file']}#{i}", frames[i]))
    return out


def crops(images: list[tuple[str, str, np.ndarray]]) -> list[tuple[str, str, np.ndarray]]:
    """The tracker's still-mode 256 px crop of each image that has a face."""
    out = []
    with FaceCropper.for_portraits(SIZE) as cropper:
        for identity, label, image in images:
            face = cropper.crop(image)
            if face.face_found:
                out.append((identity, label, face.crop))
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a same-person pair scores above a different pair), ties half."""
    return float(((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()))


def equal_error_threshold(pos: np.ndarray, neg: np.ndarray) -> float:
    """The cosine where the false-reject and false-accept rates are closest."""
    grid = np.linspace(-1, 1, 2001)
    gap = [abs((pos < t).mean() - (neg >= t).mean()) for t in grid]
    return float(grid[int(np.argmin(gap))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    args = parser.parse_args()
    faces = crops(corpus_images(args.corpus))
    ids = [f[0] for f in faces]
    batch = torch.from_numpy(np.stack([f[2] for f in faces])).permute(0, 3, 1, 2).float() / 255
    pairs = list(itertools.combinations(range(len(faces)), 2))
    same = np.array([ids[i] == ids[j] for i, j in pairs])
    print(f"{len(faces)} face crops, {len(set(ids))} identities, {same.sum()} same-person and "
          f"{(~same).sum()} different pairs")
    labels = [f[1] for f in faces]
    for side, centre_y in ((0.5, 0.55), (0.6, 0.55), (0.7, 0.55), (0.8, 0.55), (1.0, 0.5)):
        model = FaceIdentity(box=FaceBox(centre_y=centre_y, side=side))
        with torch.no_grad():
            emb = torch.nn.functional.normalize(torch.cat([model(b) for b in batch.split(16)]), dim=1).numpy()
        cos = np.array([float(emb[i] @ emb[j]) for i, j in pairs])
        pos, neg = cos[same], cos[~same]
        t = OPENCV_SAME_PERSON_COSINE
        print(f"box side {side} centre_y {centre_y}: same {pos.mean():.3f}±{pos.std():.3f} (min {pos.min():.3f}), "
              f"different {neg.mean():.3f}±{neg.std():.3f} (max {neg.max():.3f}), AUC {auc(pos, neg):.4f}; "
              f"at cos {t}: false reject {(pos < t).mean():.3f}, false accept {(neg >= t).mean():.4f}")
        eer = equal_error_threshold(pos, neg)
        print(f"    equal-error cosine {eer:.3f}: false reject {(pos < eer).mean():.3f}, "
              f"false accept {(neg >= eer).mean():.4f}; most similar 'different' pairs: "
              + ", ".join(f"{labels[pairs[k][0]]}~{labels[pairs[k][1]]} {cos[k]:.2f}"
                          for k in np.flatnonzero(~same)[np.argsort(-neg)[:3]]))


if __name__ == "__main__":
    main()
