"""Pretrained networks that pip packages ship (never downloaded at run time), used as frozen judges.

``packages`` finds the optional packages and their weight files; ``efficientnet`` gives ImageNet
features for the perceptual loss; ``sface`` gives a differentiable face-identity embedding for the
identity loss and for ``adasr eval``. All of them come with the ``train`` extra of pyproject.toml.
"""
