"""The `flowrelay` command line: a module per verb (see flowrelay.cli.main)."""
