"""Exceptions a job reports as a one-line reason (no traceback): expected, actionable failures."""


class SparkrecError(RuntimeError):
    """Bad input data, a missing artifact, a failed check: the message says what and how to fix."""
