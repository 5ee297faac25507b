"""mockex: a scriptable mock of Microsoft Exchange 2013 for testing Exchange clients."""

__version__ = "0.1.0"
