"""placeholder"""


def predict() -> None:
    """Not yet implemented."""
    raise SystemExit("not implemented")
