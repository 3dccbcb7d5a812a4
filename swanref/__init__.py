"""swanref: reference and verification library for SWAN's gradient operators."""
__version__ = "0.1.0"
