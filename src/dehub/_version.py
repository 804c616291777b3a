"""The package version, in a module of its own so that any module can import it
without depending on the import order of ``dehub/__init__.py``."""

__version__ = "0.1.0"
