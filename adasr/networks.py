"""The three inference networks of one model, built together from one ModelConfig."""

from __future__ import annotations

from torch import nn

from adasr.config import ModelConfig
from adasr.generator import OcclusionAwareSPADEGenerator
from adasr.head_pose import HEEstimator
from adasr.keypoint_detector import KPDetector


class AdaSRNetworks(nn.Module):
    """kp_detector, he_estimator and generator under their checkpoint names."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.kp_detector = KPDetector(cfg.kp_detector, cfg.num_kp, cfg.image_channel)
        self.he_estimator = HEEstimator(cfg.he_estimator, cfg.num_kp, cfg.image_channel)
        self.generator = OcclusionAwareSPADEGenerator(cfg)

    #: Checkpoint entries, in the order the released file stores them.
    PARTS = ("generator", "kp_detector", "he_estimator")
