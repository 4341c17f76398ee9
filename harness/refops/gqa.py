"""com.microsoft.GroupQueryAttention (placeholder until the GQA reference lands)."""

OPS: list[type] = []
