"""Command-line interface of resdsl (installed as the ``resdsl_cli`` package)."""
