"""`python -m bgrun`."""

from bgrun.entry import main

main()
