"""``python -m xmlflow``: the same as the ``xmlflow`` command."""

from .cli import main

main()
