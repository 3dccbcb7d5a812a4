"""The verification toolkit: measurements and error metrics (``measure``), test matrices
(``matrices``, ``highprec``), the property catalogue, the checker, golden vectors and the
pytest plugin.  ``swanref.testing`` is the public face of ``measure`` and ``matrices``.
"""


def __getattr__(name):
    # ``swanref.verify.identify(fn, ...)`` without importing the search for every verify import
    if name == "identify":
        from swanref.verify.identification import identify
        return identify
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
