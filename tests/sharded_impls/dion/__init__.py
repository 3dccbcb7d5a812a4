# Vendored for swanref's sharded-check tests: the files of microsoft/dion that its distributed
# Muon needs, unchanged, from
# https://github.com/microsoft/dion/tree/0a059a4542e5aa74b40dcd1dce363836c7afcd48/dion
# (MIT License, Copyright (c) Microsoft Corporation: LICENSE next to this file).  dion's own
# __init__.py imports every optimizer of the package; this one imports only Muon.
from .muon import Muon  # noqa: F401
