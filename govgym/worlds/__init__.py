"""The worlds govgym ships: ungoverned environments that a governance layer wraps."""

__all__: list[str] = []
