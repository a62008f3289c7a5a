"""One error hierarchy, so every adapter (CLI, RunPod handler, ComfyUI node) can tell a
user's mistake from a broken install and report both with a message that says what to do."""

from __future__ import annotations


class Ben2WorkerError(Exception):
    """Base class: the message is written for the person who has to fix it."""


class ConfigError(Ben2WorkerError, ValueError):
    """A setting (an environment variable) has a value the worker cannot use. Raised while the
    settings are read, at start, never mid-job; ``variable`` names it, the message says the
    value and what is allowed."""

    def __init__(self, message: str, *, variable: str | None = None):
        super().__init__(message)
        self.variable = variable


class InputError(Ben2WorkerError, ValueError):
    """Bad input from a caller; the worker keeps serving.

    ``field`` names the request field or file the problem is in, when known."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class ImageDecodeError(InputError):
    """Data that is not a decodable image: unknown format, truncated, corrupt."""


class ImageTooLargeError(InputError):
    """An image over the configured pixel limit, refused before its pixels are decoded."""


class ModelError(Ben2WorkerError):
    """A model file is missing, corrupt or cannot be loaded: an install problem."""


class ModelMissingError(ModelError):
    pass


class ModelCorruptError(ModelError):
    pass


class GpuUnavailableError(ModelError):
    """A worker that must run on a GPU cannot use one: it refuses to start rather than serve at CPU speed."""


class DownloadError(ModelError):
    """A download failed (offline, hub unreachable, revision gone)."""


class EngineUnavailableError(Ben2WorkerError):
    """A node or pipeline needs an engine this worker does not serve (model absent or the
    engine not built yet). Never answered with a fake result; safety stages fail closed."""


class BlockedError(Ben2WorkerError):
    """The safety gate refused an image (or could not decide, which also blocks). Not an input
    error and not a crash: the gate did its job, and the answer says which check blocked."""


class StageTimeoutError(Ben2WorkerError):
    """A stage (a safety check) overran its time limit. Its thread may still be busy, so the
    worker should be recycled; a safety check that times out blocks its image."""


class NodeFailedError(Ben2WorkerError):
    """A workflow node failed. Names the node (``node_id``, ``class_type``) and keeps what
    went wrong as ``__cause__`` (an :class:`InputError` for a bad upload, say), whose message
    it repeats unchanged after the node's name."""

    def __init__(self, message: str, *, node_id: str | None = None, class_type: str | None = None):
        super().__init__(message)
        self.node_id = node_id
        self.class_type = class_type
