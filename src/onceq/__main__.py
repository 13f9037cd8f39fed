"""`python -m onceq` is the `onceq` command."""

from onceq.cli import main

main()
