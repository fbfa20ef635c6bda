"""What the commands share with the tests: reading stack files (stackfile), the mock engine
that runs the program offline (mock_engine), the S3 model repository (model_repository) and
where a stack's model store is (stack_store).

Library code only: no argument parsing, no exit statuses, nothing only a test needs, and no
import from tools' commands or from tests/.
"""
