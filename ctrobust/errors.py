"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""

__all__ = ["CtrobustError"]


class CtrobustError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do.

    The command line prints ``ctrobust <command>: error: <message>`` and exits with ``exit_code``.
    """

    exit_code = 1
