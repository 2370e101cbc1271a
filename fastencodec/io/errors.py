"""The error the input/output modules raise for files they cannot read or write."""


class AudioFileError(ValueError):
    """An audio file is missing, unreadable, corrupt, empty or cannot be written (also raised for
    any output written through :class:`fastencodec.io.atomic.AtomicOutput`)."""
