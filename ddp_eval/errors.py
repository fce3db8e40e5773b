"""The one exception type for mistakes a user can fix (bad config, missing file, bad row).

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class DdpEvalError(Exception):
    """A user-facing error: the message says what is wrong, where, and what to do."""
