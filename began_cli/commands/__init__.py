"""One module per CLI verb. Each imports its heavy dependencies inside the command."""
