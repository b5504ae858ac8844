"""The release: written here only; the package metadata, ``conversion_relay.__version__``, the
command's ``--version`` and the vendors' ``User-Agent`` all read it."""

__version__ = "0.2.0"
