"""One module per CLI command; each defines a typer-annotated function and imports heavy
libraries only inside it."""
