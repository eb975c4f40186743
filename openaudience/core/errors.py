"""Errors a user can cause. The CLI prints them without a traceback; bugs keep theirs."""


class UserError(Exception):
    """Something the user can fix: bad input, bad configuration, a missing file."""


class ConfigError(UserError):
    """The environment or a configuration file is wrong."""


class ValidationFailed(UserError):
    """Input data broke its contract; nothing was written."""

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report
