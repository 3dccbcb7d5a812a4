"""Test-matrix generators (public path; implemented in ``swanref.verify.matrices``)."""
from swanref.verify.matrices import *  # noqa: F401,F403
