"""placeholder"""


def ui() -> None:
    """Not yet implemented."""
    raise SystemExit("not implemented")
