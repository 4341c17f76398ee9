"""Marks shared across families (each family declares its own in its module's FAMILY), and the
union of both that pytest registers and `-m` accepts."""

MARKS: dict[str, str] = {
    "norm": "RMS-style norms: SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization, RMSNormalization-23",
    "rotary": "rotary embeddings: com.microsoft.RotaryEmbedding and ai.onnx RotaryEmbedding-23",
    "attention": "attention ops (GroupQueryAttention, ai.onnx Attention)",
    "dequantize": "blocked DequantizeLinear",
    "quant": "block-quantised weights and embeddings",
    "fp16": "float16 cases",
    "bf16": "bfloat16 cases",
    "zoo": "zoo models and their twins",
    "seed_gap": "rows named in the seed documents (tract on Gemma-3 fused export …)",
}


def all_marks() -> dict[str, str]:
    from .families import family_marks

    return {**MARKS, **family_marks()}
