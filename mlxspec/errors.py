"""User-facing errors: each becomes one clear line and a non-zero exit in the CLI."""


class MlxspecError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class ModelNotFoundError(MlxspecError):
    pass


class RegistryError(MlxspecError):
    """A model registry file that cannot be read."""


class ModelLoadError(MlxspecError):
    """Corrupt or incomplete weights, unreadable config."""


class TokenizerMismatchError(MlxspecError):
    pass


class InvalidParameterError(MlxspecError):
    pass


class HeadLoadError(MlxspecError):
    """A draft-head file is corrupt or belongs to another model."""


def first_line(exc: BaseException) -> str:
    """One line describing `exc` for a user: its message's first line, or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
