"""Components of the TF Serving on EKS stack, one module per component."""
