"""Quality evaluation of a talking-head model: same-identity reconstruction and cross-identity driving.

``metrics`` holds the per-image measures (PSNR, SSIM, AKD, AED, FID); ``evaluate`` runs the job
behind ``adasr eval`` and compares the model with the "copy the source frame" baseline.
"""

from adasr.evaluation.evaluate import EvalOptions, EvalReport, evaluate, format_table
from adasr.evaluation.metrics import (
    FrechetInception,
    IdentityEmbedder,
    LandmarkDetector,
    akd,
    psnr,
    ssim,
)

__all__ = ["EvalOptions", "EvalReport", "evaluate", "format_table", "FrechetInception", "IdentityEmbedder",
           "LandmarkDetector", "akd", "psnr", "ssim"]
