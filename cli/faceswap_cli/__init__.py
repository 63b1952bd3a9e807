"""Command-line client of the jobs API: ``faceswap submit | status | wait | list | retry | download``."""
