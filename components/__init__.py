"""Components of the TF Serving on EKS stack: one module per stack key, plus the helpers they share.

Importing the package creates nothing; resources exist only once components/stack.py builds them.
"""
