"""One module per CLI command; each defines a typer-annotated function and imports heavy
libraries only inside it."""


def comma_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]`` (a comma-separated CLI option; ``None`` → ``[]``)."""
    return [v.strip() for v in (text or "").split(",") if v.strip()]
