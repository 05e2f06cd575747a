"""`python -m usagg` runs the CLI."""

from usagg.cli.app import main

main()
