"""Errors that whispertune reports to the user as one clear line (CLI exit code 2)."""


class UserError(Exception):
    """A problem with the user's input, config or machine; the CLI prints it without a traceback."""

    exit_code = 2


class ConfigError(UserError):
    """An unknown key, a wrong type or a value outside the accepted set in a config or flag."""


class AudioError(UserError):
    """An audio file that cannot be used; `reason` is a short machine-readable tag for reports."""

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


class HardwareError(UserError):
    """A requested mode (quantization, precision) that this machine cannot run."""
