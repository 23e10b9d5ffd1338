"""Search, ensemble selection, export and the fersearch CLI."""
