"""Preflight (`python -m tools.preflight --stack <stack>`): read-only checks of the user's AWS
account against what a stack needs, run before `pulumi up`. The package holds the command
line (__main__), the finding model (model), and one module per group of checks; it must not
create, change or delete anything in the account."""
