"""The one exception type for bad input that the CLI turns into a one-line message."""


class ApplianceError(Exception):
    """Bad input (config, model file, media, command): the message names what and where.

    The CLI prints it on one line and exits non-zero, without a traceback.
    """
