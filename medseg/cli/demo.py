"""placeholder"""


def demo() -> None:
    """Not yet implemented."""
    raise SystemExit("not implemented")
