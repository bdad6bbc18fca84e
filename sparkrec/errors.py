"""Exceptions a job reports as a one-line reason (no traceback): expected, actionable failures."""


class SparkrecError(RuntimeError):
    """Bad input data, a missing artifact, a failed check: the message says what and how to fix."""

    exit_code = 1


class QualityGateBlocked(SparkrecError):
    """A new model regressed beyond tolerance: nothing was published, the previous model and top-K
    table stay live. A distinct exit code lets a scheduler tell this from a crash."""

    exit_code = 3
