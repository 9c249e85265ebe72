"""`python -m shipline` runs the CLI."""

from shipline.cli import main

main()
