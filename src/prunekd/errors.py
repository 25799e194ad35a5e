"""The one base of the failures a user can fix, so a caller catches them all without importing
the module that raises each."""


class UserError(Exception):
    """A failure a user can fix (bad params, a missing, damaged or busy input): a stage prints it
    as one line and exits 2 (``constants.USER_ERROR``), without a traceback."""
