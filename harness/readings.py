"""Where the operator text allows more than one reading, and where it requires a refusal.

Data, not logic: cases name a reading (the key of `Built.alternates`) or a required refusal
(`Case.refusals`) from here, the runner turns a match into the `ambiguous` / conformant
`unsupported` verdicts, and the report renders this catalogue with the schema sentences quoted,
so an upstream documentation fix can be filed from it. Quotes are from onnxruntime 1.32.0's
`get_all_operator_schema()`; docs/gqa.md and docs/quant.md weigh the evidence.

Every chosen reading must be one the text allows, and each entry says which sentence supports it
(`support`). A reading the text rules out is never acceptable: where a backend could plausibly
take one, the entry lists it under `excluded` with the sentence that rules it out, cases carry
its expected outputs (`Built.excluded`), and a backend that matches it stays a `mismatch` whose
message names it (compare.judge_readings), so the finding says what the backend actually does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    name: str  # the key a case uses in Built.alternates; says what the reading is
    evidence: str


@dataclass(frozen=True)
class Ambiguity:
    id: str  # R-number of docs/<op>.md
    op: str
    question: str
    quotes: tuple[str, ...]  # the schema sentences that leave it open
    chosen: Reading  # what the reference and the oracle implement
    others: tuple[Reading, ...]  # the other readings the text allows
    doc: str
    support: str = ""  # the sentence of the text that supports the chosen reading
    #: readings the text rules out (each Reading's evidence quotes the sentence that does):
    #: matching one is a mismatch that names it, never `ambiguous`
    excluded: tuple[Reading, ...] = ()


@dataclass(frozen=True)
class RequiredRefusal:
    """The text says some execution providers must reject a configuration: their refusal is
    the conformant behaviour. `scope` names the backends it speaks of by their `provider`
    attribute (ORT execution providers); those not in `honoured_by` must refuse."""

    id: str
    op: str
    what: str
    quote: str
    honoured_by: tuple[str, ...]
    scope_suffix: str = "ExecutionProvider"

    def requires_refusal(self, provider: str | None) -> bool:
        return bool(provider) and provider.endswith(self.scope_suffix) and provider not in self.honoured_by


_GQA = "com.microsoft.GroupQueryAttention"
_LWS = ("local_window_size: \"left_window_size for causal local attention (like Mistral). Must be -1 when "
        "causal is 0. Default value is -1 meaning unused.\"")

# names used as keys of Built.alternates (cases import these constants)
ROTARY_POS1_BROADCAST = "shape-(1) position_ids = every token at that one position"
WINDOW_W_PLUS_CURRENT = "window = W preceding keys + the current one"
WINDOW0_CURRENT_ONLY = "local_window_size 0 = the current key only"
WINDOW0_NO_KEY = "local_window_size 0 = no key visible (masked rows give 0)"
INT4_UNSIGNED_OFFSET8 = "4-bit cache values stored unsigned with an offset of 8"
INT4_SIGNED = "4-bit cache values stored as signed two's complement nibbles"
KVQ_FLOAT_NEW_ROWS = "attention reads the new rows before quantisation"
ROTATED_Q_UNROUNDED = "rotated/normalised Q kept above the case's precision (only K, stored in present, rounded)"
ROTARY_IN_T = "rotation computed in the case's float16/bfloat16 arithmetic (each product and sum rounded)"
G_IDX_IGNORED = "g_idx ignored (the input is deprecated)"
MASK_FILTER_REPLACES = "a padded key's score is replaced by mask_filter_value (not shifted by it)"
POS_FIRST_OF_ROW = "first prompt: each row's first position_id, then consecutive"
POS_FIRST_OF_TENSOR = "first prompt: position_ids[0, 0] for every row, then consecutive"
POS_EVERY_ELEMENT = "first prompt: row s of entry b rotated at position_ids[b, s] (every element used)"
WINDOW0_UNUSED = "local_window_size 0 = no window (as -1)"
GELU_TANH = "Gelu as the tanh approximation 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))"
SKIP_SUM_IN_T = "input + skip (+ bias) rounded to the input type after each add, before the normalisation"

AMBIGUITIES: tuple[Ambiguity, ...] = (
    Ambiguity(
        "R3", _GQA, "What does a window of W keys count?",
        (_LWS, "Windowed KV Cache: \"`C` must be at least `W`\" … \"Hence `min(T, W) <= L(T) <= min(T, C)`: the whole window "
               "stays resident\" … \"The CUDA implementation requires `C == W`\""),
        Reading("W keys including the current one: key j is visible from position p iff p - W < j <= p",
                "a cache of exactly C = W rows (what CUDA requires) must hold the whole window, so the window "
                "is W keys in all; HF Mistral masks j <= p - W"),
        (Reading(WINDOW_W_PLUS_CURRENT, "flash-attn window_size_left and ONNX Attention-25 left_window_size count "
                 "W keys before the current one; ORT itself did so before PR #25927"),),
        "docs/gqa.md#R3",
        support="\"Hence `min(T, W) <= L(T) <= min(T, C)`: the whole window stays resident\" with \"The CUDA "
                "implementation requires `C == W`\": a cache of W rows holds the whole window, so the window is W "
                "keys in all"),
    Ambiguity(
        "R4", _GQA, "What does local_window_size = 0 mean?",
        (_LWS, "sliding_window_cache: \"Requires local_window_size > 0\""),
        Reading(WINDOW0_CURRENT_ONLY,
                "0 is not -1, so it is a window: a left window of 0 keys, and the causal diagonal (the query's "
                "own key) stays visible, as left_window_size = 0 means in flash-attn and ONNX Attention-25; "
                "the only reading under which every output row is defined by the text"),
        (Reading(WINDOW0_NO_KEY, "R3's counting taken literally: p - 0 < j <= p is empty, every row fully "
                 "masked; the text defines no output for such a row (ORT CPU 1.32.0 writes 0, the value "
                 "this reading's expected outputs carry)"),),
        "docs/gqa.md#R4",
        support="\"left_window_size for causal local attention (like Mistral)\" and \"-1 meaning unused\": "
                "only -1 switches the window off, so 0 is a window of no key to the left of the query",
        excluded=(Reading(WINDOW0_UNUSED, "ruled out by \"Default value is -1 meaning unused\": the text names -1, "
                          "not 0, as the value that switches the window off"),)),
    Ambiguity(
        "R14", _GQA, "How are two 4-bit cache values stored in a uint8 byte?",
        ("\"For 4-bit quantization, the data type is uint8 where each byte contains two 4-bit values.\"",
         "k_quant_type: \"PER_TENSOR … PER_CHANNEL\" (scales only; there is no zero point input)"),
        Reading(INT4_UNSIGNED_OFFSET8,
                "the container is uint8, and both other com.microsoft ops that pack 4-bit values into uint8 "
                "give them an implicit offset of 2^(bits-1) = 8: MatMulNBits (\"If not provided, a default zero "
                "point is used: 2^(bits - 1) (e.g., 8 for 4-bit quantization\") and GatherBlockQuantized "
                "(\"the default value is 0 for int4/uint4, or 2^(bits-1) for uint8\")"),
        (Reading(INT4_SIGNED, "the cache is symmetric (scales, no zero point) and the 8-bit cache is int8, "
                 "so its 4-bit values may be signed too"),),
        "docs/gqa.md#R14",
        support="\"the data type is uint8 where each byte contains two 4-bit values\": unsigned nibbles, and "
                "a symmetric (signed) value in them needs the offset the same domain uses for uint8 (8)"),
    Ambiguity(
        "R16", _GQA, "Does attention read the new K/V rows as quantised into the cache, or before?",
        ("\"With a quantized CUDA cache and `P = 0, Q > 1`, attention reads the original floating-point new "
         "K/V; omitting `query_seqlens` while retaining a capacity-valued bound can instead select legacy "
         "quantized-cache reads.\"",),
        Reading("the cache as stored (new rows quantised, then dequantised)", "the cache is the state; the "
                "text names float reads only for one CUDA prefill configuration"),
        (Reading(KVQ_FLOAT_NEW_ROWS, "the CUDA prefill sentence above"),),
        "docs/gqa.md#R16",
        support="\"can instead select legacy quantized-cache reads\" and \"a larger bound preserves quantized-cache "
                "reads\": reading the cache as quantised is a behaviour the text describes; it names float reads "
                "only for a CUDA cache with P = 0 (no CUDA column runs here)"),
    Ambiguity(
        "R17", _GQA, "In float16/bfloat16, at what precision are the rotated (or q/k-normalised) Q and K formed?",
        ("do_rotary: \"Whether to use rotary position embedding.\"",
         "present_key: \"present state key with support for format BNSH\" (type T: the rotated K is stored "
         "in T, so attention over the cache reads it rounded)"),
        Reading("rotated Q and K both rounded to T before the Q·K product",
                "K must be: it is materialised in present_key (type T), and a decode step reads it from there; "
                "Q goes through the same rotary embedding, whose own operator (com.microsoft.RotaryEmbedding) "
                "outputs T. ORT CPU 1.32.0 matches this to 1 ulp"),
        (Reading(ROTATED_Q_UNROUNDED, "the text names no intermediate type for Q; a kernel may rotate Q in "
                 "registers at higher precision"),
         Reading(ROTARY_IN_T, "the text names no precision for the rotation; RotaryEmbedding on T inputs may "
                 "compute in T (onnx.reference's RotaryEmbedding-23 does). With logits of magnitude ~50 "
                 "(head 512, scale 1.0) one ulp of K moves the output by ~0.02, above any fp16 bound")),
        "docs/gqa.md#R17",
        support="present_key: \"present state key with support for format BNSH\" (type T): the rotated K is "
                "materialised in T, and a decode step reads it from there"),
    Ambiguity(
        "M2", "com.microsoft.MultiHeadAttention", "Is mask_filter_value added to a padded key's score, or does it "
        "replace it?",
        ("mask_filter_value: \"The value to be filled in the attention mask. Default value is -10000.0f\"",
         "key_padding_mask: \"value 0 means padding or 1 otherwise\""),
        Reading("added: the attention mask holds mask_filter_value where a key is padded and 0 elsewhere, and the "
                "mask is added to the scores", "'filled in the attention mask': the value fills the mask, and an "
                "attention mask (as attention_bias, 'added to QxK'') is added"),
        (Reading(MASK_FILTER_REPLACES, "'filled' read as the masked score itself"),),
        "docs/mha.md",
        support="mask_filter_value: \"The value to be filled in the attention mask\": it fills the mask, and a "
                "mask is added to the scores"),
    Ambiguity(
        "R6", _GQA, "On a first prompt, which position_ids are used?",
        ("position_ids: \"2D tensor with shape (batch_size, sequence_length). When processing the first prompt the "
         "kernel uses only the first element\"",),
        Reading(POS_FIRST_OF_TENSOR,
                "\"the first element\" read as written: the tensor's one first element, position_ids[0, 0]; row s "
                "of every entry is rotated at position_ids[0, 0] + s (ORT CPU 1.32.0 does this). On later steps "
                "(a past) every element is used"),
        (Reading(POS_FIRST_OF_ROW, "\"the first element\" read per batch entry: the tensor is (batch_size, "
                 "sequence_length), one row of ids per entry"),),
        "docs/gqa.md#R6",
        support="position_ids: \"When processing the first prompt the kernel uses only the first element\"",
        excluded=(Reading(POS_EVERY_ELEMENT, "ruled out by \"the kernel uses only the first element\": on a first "
                          "prompt a kernel that reads every id uses more than the first element"),)),
    Ambiguity(
        "P1", "com.microsoft.RotaryEmbedding", "What does a position_ids of shape (1) mean?",
        ("position_ids: \"1D tensor with shape (1) or 2D tensor with shape (batch_size, sequence_length)\"",),
        Reading("a start offset: token s of every batch entry is at position_ids[0] + s",
                "what ONNX Runtime's kernel (the op's owner) computes and what ORT-GenAI's exports rely on; "
                "the text names no arithmetic"),
        (Reading(ROTARY_POS1_BROADCAST, "one position id, broadcast over (batch_size, sequence_length) as "
                 "ONNX broadcasts; the two readings agree for one token (a decode step)"),),
        "docs/rotary.md#P1",
        support="position_ids: \"1D tensor with shape (1) or 2D tensor with shape (batch_size, sequence_length)\": "
                "a shape (1) is allowed and no arithmetic is named, so the op owner's start offset is a reading the "
                "text allows, and so is one position broadcast"),
    Ambiguity(
        "Q1", "com.microsoft.MatMulNBits", "Is the deprecated g_idx input read?",
        ("g_idx: \"group_idx. This input is deprecated\"",),
        Reading("column k uses the scale and zero point of block g_idx[k]", "a given input is read; "
                "'deprecated' says exporters should stop emitting it, not that kernels ignore it"),
        (Reading(G_IDX_IGNORED, "'deprecated' read as 'ignored'"),),
        "docs/quant.md",
        support="g_idx: \"group_idx. This input is deprecated\": deprecated, not removed; a given input is read"),
    Ambiguity(
        "A1", "com.microsoft.Gelu", "Exact (erf) GELU or its tanh approximation? (also BiasGelu)",
        ("Gelu: \"Gaussian Error Linear Unit. ... The GELU nonlinearity is the expected transformation of a "
         "stochastic regularizer which randomly applies the identity or zero map to a neuron's input.\"",
         "BiasGelu: \"It takes the sum of input A and bias input B as the input of Gelu activation.\""),
        Reading("x * Phi(x) = 0.5x(1 + erf(x/sqrt 2))", "the expectation the text describes is exactly x*Phi(x); "
                "the approximation has its own op (FastGelu), whose text gives the tanh formula"),
        (),
        "docs/activations.md#A1",
        support="\"The GELU nonlinearity is the expected transformation of a stochastic regularizer which randomly "
                "applies the identity or zero map to a neuron's input\": E[x·m], m ~ Bernoulli(Phi(x)), is x*Phi(x)",
        excluded=(Reading(GELU_TANH, "ruled out by the same sentence: the tanh formula approximates the "
                          "expectation (up to 4.7e-4 off, 30x the float32 activation bound), it is not it; the approximation "
                          "is its own op, FastGelu"),)),
    Ambiguity(
        "A2", "com.microsoft.SkipLayerNormalization", "In float16, is the sum normalised before or after "
        "it is rounded to T?",
        ("input_skip_bias_sum: \"Sum of the input and skip inputs (and bias if it exists) with shape (batch_size, "
         "sequence_length, hidden_size).\" (type T)", "\"Skip and Layer Normalization Fusion\""),
        Reading("the sum of the T inputs normalised as computed (no rounding to T in between)",
                "the text names no intermediate type; the fusion replaces Add + LayerNormalization, and "
                "ORT CPU 1.32.0 matches this reading"),
        (Reading(SKIP_SUM_IN_T, "the unfused graph rounds each Add's output to T before LayerNormalization, and "
                 "the op materialises that sum in T (input_skip_bias_sum)"),),
        "docs/activations.md#A2",
        support="\"Skip and Layer Normalization Fusion\": a fusion of Add + LayerNormalization, and the text "
                "names no intermediate type for the sum it normalises"),
)

QK_NORM_CPU = RequiredRefusal(
    "R10-refusal", _GQA, "q_norm_weight / k_norm_weight on an execution provider other than CUDA or WebGPU",
    "q_norm_weight: \"Currently honored by the CUDA and native WebGPU execution providers; JSEP WebGPU/JS "
    "and other EPs must reject the node when this input is set.\"",
    honoured_by=("CUDAExecutionProvider", "WebGpuExecutionProvider"))

REFUSALS: dict[str, RequiredRefusal] = {r.id: r for r in (QK_NORM_CPU,)}


def find_reading(name: str) -> tuple[Ambiguity, Reading] | None:
    """The ambiguity and reading a case's alternates (or excluded) key names (None for a key not
    catalogued)."""
    for a in AMBIGUITIES:
        for r in (a.chosen, *a.others, *a.excluded):
            if r.name == name:
                return a, r
    return None


def catalogue() -> list[dict]:
    """The catalogue as plain data (for results, the report and docs)."""
    return [{"id": a.id, "op": a.op, "question": a.question, "quotes": list(a.quotes), "doc": a.doc,
             "chosen": {"name": a.chosen.name, "evidence": a.chosen.evidence}, "support": a.support,
             "others": [{"name": r.name, "evidence": r.evidence} for r in a.others],
             "excluded": [{"name": r.name, "evidence": r.evidence} for r in a.excluded]} for a in AMBIGUITIES]


def is_excluded(name: str) -> bool:
    """True when `name` is a reading the text rules out (an Ambiguity's `excluded`)."""
    found = find_reading(name)
    return bool(found) and found[1] in found[0].excluded
