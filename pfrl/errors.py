"""Error types shared across modules. Kept free of heavy imports (torch, ray) so that the CLI and
the controller can name them without loading those."""


class UserError(Exception):
    """Bad config, bad data file, missing model...: the CLI prints the message as one line and
    exits 2, never a traceback."""


class SyncError(RuntimeError):
    """A weight sync failed: a peer vanished, timed out, or sent a malformed stream."""


class RunFailed(Exception):
    """An actor failed in a way the run cannot survive; the message names it and the cause."""
