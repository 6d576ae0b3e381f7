"""Platform `cscl` subcommands, registered through the `cscl.commands` entry-point group."""
