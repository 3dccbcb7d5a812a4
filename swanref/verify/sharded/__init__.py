"""The sharded check's parts (docs/spec.md section 10): layouts and split rules, the
reduction-order term, the named global-versus-local mistakes, and the calling conventions run
inside the ranks.  :mod:`swanref.verify.distributed` puts them together (``check-sharded``)."""
