"""The one exception type of the data layer."""


class DataError(ValueError):
    """Bad data input. The message is one line that names the bad thing and how to fix it."""

    def __init__(self, message: str):
        # Callers print these to users of a CLI; keep them on one line even when an
        # underlying exception message (a tarfile error, a path) carries newlines.
        super().__init__(" ".join(str(message).split()))
