"""The verification toolkit: measurements and error metrics (``measure``), test matrices
(``matrices``, ``highprec``), the property catalogue, the checker, golden vectors and the
pytest plugin.  ``swanref.testing`` is the public face of ``measure`` and ``matrices``.
"""
