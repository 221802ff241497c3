"""User-facing errors. The CLI prints ``error: <message>`` for these and exits non-zero, without a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, ...): shown as one line, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """An experiment file or override is invalid."""


class DatasetMissing(UserError):
    """The dataset is not on disk; the message says how to get it."""


class CheckpointMismatch(UserError):
    """A checkpoint belongs to a different experiment configuration."""


class TrainingDiverged(UserError):
    """The loss or the weights stopped being finite: training stops without saving the broken state."""

    exit_code = 4


class UnsupportedGPU(UserError):
    """The GPU this run was given cannot be used by the installed torch (no kernels for its sm, or CUDA unavailable
    although a GPU was allocated). Its own exit code: a job that ends with it is not requeued, since a requeue would
    land on the same kind of node again."""

    exit_code = 5
