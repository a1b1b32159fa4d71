"""placeholder"""


def evaluate() -> None:
    """Not yet implemented."""
    raise SystemExit("not implemented")
