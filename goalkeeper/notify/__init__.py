"""Telling people: the owner mails and the ops chat summary, rendered and delivered.

`render` turns reports into words and never does I/O; `email` and `telegram` deliver them and
are the only modules here that talk to the network. Nothing in this package imports the
scanner, the inventory, the state store or the pipeline: it is handed finished reports.
"""
