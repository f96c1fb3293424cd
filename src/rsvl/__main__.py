"""``python -m rsvl``: the command line, for launchers that start modules (``torchrun -m rsvl ...``)."""

from rsvl.cli import app

if __name__ == "__main__":
    app()
