"""Errors whose messages are written for the researcher and shown as they are in the UI."""


class PerplexError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class ModelLoadError(PerplexError):
    """A model could not be found, read or loaded."""


class InputFormatError(PerplexError):
    """An upload or typed input is not in a format Perplex can read."""


class StoreError(PerplexError):
    """The results database cannot be opened, read or written."""


class GenerationError(PerplexError):
    """A generation request cannot be carried out as asked."""
