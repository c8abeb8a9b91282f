"""`python -m videobert_cli.cli` runs the `videobert` command."""

from videobert_cli.cli.app import main

main()
