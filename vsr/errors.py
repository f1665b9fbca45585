class VsrError(Exception):
    """Bad input from the user: the message says what is wrong and what to do; no traceback. Its own kind of
    exception, so a generic ``except ValueError`` around library code never catches and re-words it."""
