"""`python -m edgecnn ...`, which is also how torchrun starts workers: `torchrun ... -m edgecnn train ...`."""

from .cli import main

main()
