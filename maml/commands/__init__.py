"""One module per `maml` subcommand, each exposing `command` (a click.Command).

Each module keeps its imports inside the command function where they are heavy, so that
listing or running one command never imports what another one needs.
"""
