"""The one error type for what a user can fix: a bad flag, file, setting or dataset.

Raised with a one-line message that says what is wrong, where, and what to do; the command line
prints it without a traceback (``--debug`` shows one) and exits non-zero. It is a ``ValueError``,
so Python callers that catch those keep working; any other exception is a bug and keeps its
traceback.
"""


class UserError(ValueError):
    """Something the user can fix, said in one line."""
