"""`s2s evaluate`: score a model package on a test set."""
