"""Domain exceptions: each message says what went wrong and what to do about it."""


class AdaSRError(Exception):
    """Base class of every error the package raises on purpose."""


class ConfigError(AdaSRError, ValueError):
    """A model or training configuration is invalid."""


class CheckpointError(AdaSRError):
    """A checkpoint cannot be read or does not fit the model."""


class InputError(AdaSRError, ValueError):
    """An input image or video cannot be used."""


class NoFaceError(InputError):
    """No face was found where one is needed."""


class MissingPackageError(AdaSRError, ImportError):
    """An optional package (an extra of pyproject.toml) that a chosen feature needs is not installed."""
