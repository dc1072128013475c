"""detour: a local proxy that finds a working path to messaging services."""

__version__ = "0.1.0.dev0"
