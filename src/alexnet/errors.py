"""The one exception type a user sees: its message says what is wrong and how to fix it."""


class AlexNetError(Exception):
    """A user-facing error (bad value, bad file, missing data).

    Library code raises it with a one-line message that names the offending thing and the fix; the
    CLI prints that line on stderr and exits with code 2.
    """


class DivergedError(AlexNetError):
    """Training stopped on a NaN or infinite loss: for a study (e.g. an init that cannot train) a
    result to record, for a single run an error to report."""


class Interrupted(AlexNetError):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM after saving a checkpoint to resume from."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum  # the CLI exits with 128 + signum, as a shell reports a killed command
