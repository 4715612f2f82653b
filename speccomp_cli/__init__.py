"""The one command line of the project: `speccomp <command>` (or `python -m speccomp_cli <command>`).

It sits above `speccomp` (the science), `tracking` (MLflow) and `study` (Optuna), parses and checks
every option by type (typer), and hands typed options to them. See `main.py`.
"""
