class VsrError(ValueError):
    """Bad input from the user: the message says what is wrong and what to do; no traceback."""
