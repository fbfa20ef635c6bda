"""Test package: behaviour tests of the stack, one module per component or behaviour; test-only
support lives in tests/support/ and must not be imported by the program or the commands."""
