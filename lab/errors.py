"""The exceptions a user should see as a single line instead of a traceback."""


class ConfigError(ValueError):
    """Bad user input: the message names the key or value and how to fix it."""


class RunFailed(RuntimeError):
    """A run that cannot go on for a reason its message states (workers that keep dying): the
    summary records it as ``failed`` and the command line prints it in one line, exit code 1."""
