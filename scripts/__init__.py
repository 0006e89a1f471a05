"""Project scripts: `ape run <name>` and `python -m scripts.<name>`."""
