"""A model's graph inputs and outputs, read from the file without importing onnx.

`check` validates a bundle against its model (every graph input fed, with the graph's dtype and
rank; expected arrays naming graph outputs) before any backend runs. That needs four fields of the
protobuf, while `import onnx` costs ~0.4-1.4 s (most of it ml_dtypes' extension) — more than the
whole check of one bundle on ONNX Runtime, which never needs onnx. So this module reads just those
fields from the protobuf wire format (the encoding is a stable public spec: varint keys, length-
delimited submessages) and skips everything else, initialisers included, without copying them.

Field numbers are onnx.proto3's: ModelProto.graph = 7; GraphProto.initializer = 5, input = 11,
output = 12, sparse_initializer = 15; ValueInfoProto.name = 1, type = 2; TypeProto.tensor_type = 1;
TypeProto.Tensor.elem_type = 1, shape = 2; TensorShapeProto.dim = 1; TensorProto.name = 8;
SparseTensorProto.values = 1. tests/test_model_io.py checks the reader against onnx itself on
every case model of the quick grid.
"""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: TensorProto.DataType -> numpy dtype name (ml_dtypes names for the types numpy lacks)
_NP_NAME = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "object",
            9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64",
            15: "complex128", 16: "bfloat16", 17: "float8_e4m3fn", 18: "float8_e4m3fnuz", 19: "float8_e5m2",
            20: "float8_e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4_e2m1"}


class ModelFormatError(ValueError):
    """The file is not a well-formed ONNX protobuf."""


@dataclass
class GraphIO:
    #: graph inputs that are not initialisers: name -> (dtype or None, rank or None), in graph order
    inputs: dict[str, tuple[np.dtype | None, int | None]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    #: the files external initialisers name (TensorProto.external_data "location"), in order
    external_locations: list[str] = field(default_factory=list)


def elem_dtype(elem_type: int) -> np.dtype | None:
    """The numpy dtype of an ONNX element type; None where there is none (undefined, unknown)."""
    name = _NP_NAME.get(elem_type)
    if name is None:
        return None
    if hasattr(np, name) or name == "object":
        return np.dtype(name)
    import ml_dtypes  # only for a model that declares such a type

    t = getattr(ml_dtypes, name, None)
    return np.dtype(t) if t is not None else None


def _varint(buf, i: int, end: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= end:
            raise ModelFormatError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ModelFormatError("varint too long")


def _fields(buf, start: int, end: int):
    """(field number, wire type, value) for each field of the message in buf[start:end]; a
    length-delimited value is given as its (start, end) span, never copied."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(buf, i, end)
        elif wire == 2:
            n, i = _varint(buf, i, end)
            if i + n > end:
                raise ModelFormatError(f"field {num} runs past its message")
            val, i = (i, i + n), i + n
        elif wire == 1:
            val, i = None, i + 8
        elif wire == 5:
            val, i = None, i + 4
        else:
            raise ModelFormatError(f"unsupported wire type {wire}")
        yield num, wire, val


def _string(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", errors="replace")


def _value_info(buf, span) -> tuple[str, int, int | None]:
    """(name, elem_type, rank or None) of a ValueInfoProto."""
    name, elem, rank = "", 0, None
    for num, wire, val in _fields(buf, *span):
        if num == 1 and wire == 2:
            name = _string(buf, val)
        elif num == 2 and wire == 2:  # TypeProto
            for tnum, twire, tval in _fields(buf, *val):
                if tnum == 1 and twire == 2:  # tensor_type
                    for fnum, fwire, fval in _fields(buf, *tval):
                        if fnum == 1 and fwire == 0:
                            elem = fval
                        elif fnum == 2 and fwire == 2:
                            rank = sum(1 for dnum, _, _ in _fields(buf, *fval) if dnum == 1)
    return name, elem, rank


def _tensor(buf, span) -> tuple[str, str | None]:
    """(name, external data location or None) of a TensorProto (name = 8, external_data = 13 of
    StringStringEntryProto key = 1 / value = 2)."""
    name, location = "", None
    for num, wire, val in _fields(buf, *span):
        if num == 8 and wire == 2:
            name = _string(buf, val)
        elif num == 13 and wire == 2:
            entry = {k: _string(buf, v) for k, w, v in _fields(buf, *val) if w == 2}
            if entry.get(1) == "location":
                location = entry.get(2, "")
    return name, location


def _graph(buf, span) -> GraphIO:
    inits: set[str] = set()
    ins: list[tuple[str, int, int | None]] = []
    io = GraphIO()
    for num, wire, val in _fields(buf, *span):
        if wire != 2:
            continue
        if num == 5:
            name, location = _tensor(buf, val)
            inits.add(name)
            if location is not None and location not in io.external_locations:
                io.external_locations.append(location)
        elif num == 15:  # SparseTensorProto: its name is its values tensor's
            for snum, swire, sval in _fields(buf, *val):
                if snum == 1 and swire == 2:
                    inits.add(_tensor(buf, sval)[0])
        elif num == 11:
            ins.append(_value_info(buf, val))
        elif num == 12:
            io.outputs.append(_value_info(buf, val)[0])
    for name, elem, rank in ins:
        if name not in inits:
            io.inputs[name] = (elem_dtype(elem) if elem else None, rank)
    return io


def read_graph_io(path: str | os.PathLike) -> GraphIO:
    """The graph's inputs and outputs from a .onnx file (memory-mapped: a large model is not read
    into memory). Raises ModelFormatError on a file that is not an ONNX protobuf."""
    p = Path(path)
    if not stat.S_ISREG(os.stat(p).st_mode):  # a FIFO or a device would block open() or never end
        raise ModelFormatError("not a regular file")
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ModelFormatError("empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            graph = None
            for num, wire, val in _fields(buf, 0, size):
                if num == 7 and wire == 2:
                    graph = val
            if graph is None:
                raise ModelFormatError("no graph")
            return _graph(buf, graph)
