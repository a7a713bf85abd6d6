"""
The one error type of the library, and how a script reports it.

Library code never exits: a mistake of the user's or of their data (a missing file, a wrong setting, a run trained
on other data) raises UserError with a sentence that says what is wrong and what to do. Only a script turns it into
its one line on stderr ("error: ...") and exit status 1, without a traceback: its main() is wrapped in
@exit_on_user_error, and fail() is the script's own shorthand for the same exit.
"""
import errno
import functools
import sys


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk or an exhausted quota: no file's fault, the run stops


class UserError(Exception):
    """A mistake the user can mend (input, settings, data), worded as the one line they will read."""


def fail(message):
    """In a script: one line on stderr, a non-zero exit, no traceback (SystemExit, so `python -c`, runpy and the
    fork server all treat it as the interpreter does)."""
    sys.exit(f"error: {message}")


def exit_on_user_error(main):
    """Decorate a script's main(): a UserError raised anywhere below becomes fail(its message)."""
    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            fail(str(e))
    return guarded
