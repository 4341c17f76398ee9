// Frames between the harness and a JS runtime, the same bytes in Node and in the browser page:
//   "OCJ1" | uint32 LE header length | header (JSON, UTF-8) | payload (header.payload bytes)
// header.tensors = [{name, dtype, dims, offset, nbytes}] points into the payload. Tensors keep
// their exact bytes: int64 as BigInt64Array, float16 as raw uint16, bool as uint8, int4/uint4
// packed two to a byte (low nibble first, as ONNX stores them).

export const MAGIC = [0x4f, 0x43, 0x4a, 0x31]; // "OCJ1"

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array,
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array,
  int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array,
  bool: Uint8Array, int4: Uint8Array, uint4: Uint8Array,
};

export function encode(header, parts = []) {
  const payload = parts.reduce((n, p) => n + p.byteLength, 0);
  const text = new TextEncoder().encode(JSON.stringify({ ...header, payload }));
  const out = new Uint8Array(8 + text.length + payload);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, text.length, true);
  out.set(text, 8);
  let off = 8 + text.length;
  for (const p of parts) {
    out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), off);
    off += p.byteLength;
  }
  return out;
}

/** -> {header, payload} or null when `buf` does not yet hold a whole frame; throws on bad magic. */
export function decode(buf) {
  if (buf.length < 8) return null;
  for (let i = 0; i < 4; i++) {
    if (buf[i] !== MAGIC[i]) throw new Error(`protocol: bad frame magic ${Array.from(buf.subarray(0, 8))}`);
  }
  const hlen = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(4, true);
  if (buf.length < 8 + hlen) return null;
  const header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + hlen)));
  const end = 8 + hlen + header.payload;
  if (buf.length < end) return null;
  return { header, payload: buf.subarray(8 + hlen, end), size: end };
}

/** Tensor descriptors + payload -> {name: {dtype, dims, data}} with aligned, owned typed arrays. */
export function unpackTensors(header, payload) {
  const out = {};
  for (const t of header.tensors || []) {
    const Arr = ARRAYS[t.dtype];
    if (!Arr) throw new Error(`protocol: no typed array for dtype ${t.dtype}`);
    // a copy into a fresh ArrayBuffer (offset 0, aligned); Buffer#slice would be a view of Node's pool
    const bytes = new Uint8Array(payload.subarray(t.offset, t.offset + t.nbytes));
    out[t.name] = { dtype: t.dtype, dims: t.dims, data: new Arr(bytes.buffer, 0, t.nbytes / Arr.BYTES_PER_ELEMENT) };
  }
  return out;
}

/** [{name, dtype, dims, data}] -> [descriptors, parts] for encode(). */
export function packTensors(list) {
  const descs = [];
  const parts = [];
  let offset = 0;
  for (const t of list) {
    const d = t.data;
    const view = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    descs.push({ name: t.name, dtype: t.dtype, dims: t.dims.map(Number), offset, nbytes: view.byteLength });
    parts.push(view);
    offset += view.byteLength;
  }
  return [descs, parts];
}
