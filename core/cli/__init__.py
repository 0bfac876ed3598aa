"""Subcommands of ``python -m core``: one module per command, each exposing ``add_parser`` and ``run``."""
