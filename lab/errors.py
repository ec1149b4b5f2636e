"""The one exception a user should see as a single line instead of a traceback."""


class ConfigError(ValueError):
    """Bad user input: the message names the key or value and how to fix it."""
