"""Where the built-in data lives: next to the package in a source checkout, under <prefix>/share/mockex when
installed (setup.cfg's data_files)."""
import os
import sys

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_dir(name: str) -> str:
    """The directory `fixtures` or `scenarios`."""
    for base in (_CHECKOUT, os.path.join(sys.prefix, "share", "mockex")):
        candidate = os.path.join(base, name)
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(_CHECKOUT, name)
