"""The version alone, so that nothing has to import the package root to learn it."""

__version__ = "0.2.0.dev0"
