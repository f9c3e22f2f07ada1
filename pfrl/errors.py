"""Errors a user can cause. The CLI prints their message as one line and exits 2."""


class UserError(Exception):
    """Bad config, bad data file, missing model...: a one-line message, never a traceback."""
