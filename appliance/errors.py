"""The exceptions for bad input that the CLI turns into a one-line message."""


class ApplianceError(Exception):
    """Bad input (config, model file, media, command): the message names what and where.

    The CLI prints it on one line and exits non-zero, without a traceback.
    """


class DataDirBusy(ApplianceError):
    """Another appliance holds the data directory (paths.lock_data_dir): not this config's
    fault, so no safe mode either."""
