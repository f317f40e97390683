"""Goalkeeper: finds dangerous services cloud customers expose, and tells them how to close them."""

__version__ = "0.1.0"


def version() -> str:
    """The installed distribution's version (what `goalkeeper --version` and build_info say)."""
    import importlib.metadata  # on first use: every command imports this package, few ask

    try:
        return importlib.metadata.version("goalkeeper")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout never installed
        return "unknown"
