"""User errors: the CLI prints their message on one line and exits 2, without a traceback."""


class UserError(ValueError):
    """Something the user can fix: the message says what and how."""


class ConfigError(UserError):
    """A bad config file, preset, override or dataset spec."""


class RunError(UserError):
    """A run folder that cannot be used; the message says what is missing."""
