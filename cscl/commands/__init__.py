"""One module per `cscl` subcommand (see cscl/cli.py for the protocol)."""
