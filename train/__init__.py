"""Training side of began (needs torch: `pip install 'began[train]'`).

Imports models/ and the torch-free core, never export/ or the CLI. Others read a
run only through runs.py (checkpoints, config, best step, images) and config.py."""
