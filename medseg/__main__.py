"""`python -m medseg` (and `torchrun -m medseg`) runs the CLI."""

from medseg.cli.app import main

main()
