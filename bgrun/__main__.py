"""`python -m bgrun`."""

from bgrun.cli import main

main()
