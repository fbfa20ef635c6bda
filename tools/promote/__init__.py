"""Promotion of model versions between stacks, and canary moves (`python -m tools.promote`;
its usage is in __main__.py).

The domain is actions.py (the edits of one model's entry); errors.py says how an action
fails, yamledit.py and document.py edit the stack file without disturbing the rest of it,
plan.py reads, checks and writes, and __main__.py is the command line. Importing the package
must not import the command line, so `python -m tools.promote` runs it exactly once.
"""
