"""Training side of began (needs torch: `pip install 'began[train]'`)."""
