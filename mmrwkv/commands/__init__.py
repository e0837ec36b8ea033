"""CLI subcommand groups; see `mmrwkv.cli.COMMAND_MODULES`."""
