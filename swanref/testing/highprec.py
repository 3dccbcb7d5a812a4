"""mpmath references (public path; implemented in ``swanref.verify.highprec``)."""
from swanref.verify.highprec import *  # noqa: F401,F403
