"""Pulumi entry point: load and validate the stack config, build every component, export."""

from components.stack import program

program()
