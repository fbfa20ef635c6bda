"""The commands a person runs, each `python -m tools.<name>`: preview, publish_model, promote,
config_docs, pin_images, bench. Each owns its arguments, messages and exit statuses.

What the commands share with the tests lives in tools/lib/; test-only support lives under
tests/support/, and no command imports from tests/.
"""
