"""User-facing errors.

Every problem caused by the user's input or configuration is raised as a
:class:`GenovaeError` whose message names the file (or config key) and the
problem in plain words. Rule scripts turn it into a one-paragraph message
instead of a traceback (see :func:`genovae.runner.run_rule`).
"""


class GenovaeError(Exception):
    """A problem with the user's data or settings, explained in words."""


class InputError(GenovaeError):
    """The input file named in the message cannot be used as it is."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(GenovaeError):
    """A configuration value is invalid or inconsistent with the data."""

    def __init__(self, key, problem):
        self.key = key
        self.problem = problem
        super().__init__(f"config error: '{key}': {problem}")


class TrainingError(GenovaeError):
    """Training could not produce a valid model (divergence, out of memory)."""
