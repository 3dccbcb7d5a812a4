"""The ``pytest11`` entry point ``swanref``: it only names the plugin module.

The entry point keeps the name ``swanref`` it had in 0.1 (``-p no:swanref`` disables the
plugin) but points here rather than at ``swanref.pytest_plugin`` itself.  Registering this
module makes pytest's ``PytestPluginManager.register`` call ``consider_module`` ->
``import_plugin("swanref.pytest_plugin")``, which skips a plugin that is already registered or
blocked.  So ``-p swanref.pytest_plugin`` on an installed swanref is a no-op (the same module
under two names would be pluggy's "Plugin already registered under a different name" error),
and ``-p no:swanref.pytest_plugin`` disables the plugin as well.
"""

pytest_plugins = ["swanref.pytest_plugin"]
