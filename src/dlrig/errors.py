"""The one exception type a user should ever see.

A ``UserError`` means the input (params, data, files) is wrong and the user can fix it. Stage scripts
catch it, print its message on one line and exit with status 2 -- no traceback. Anything else is a bug
in dlrig and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad params, missing or corrupt data: a message that names the key or file and what is allowed."""
