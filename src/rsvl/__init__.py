"""rsvl: remote-sensing vision-language methods over one shared, tested core.

The core (``rsvl.geometry``, ``rsvl.io``) is importable on its own; the methods live in
``rsvl.methods`` and import the core, never the other way round.
"""

__version__ = "0.1.0"
