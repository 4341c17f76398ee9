"""Block-quantised ops (placeholder until the quantised reference lands)."""

OPS: list[type] = []
