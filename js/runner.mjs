// What a JS runtime does with one request frame, shared by the Node worker and the browser page
// so both run the very same code: `hello`, `prepare` (create a session; a refusal is
// `unsupported` in the runtime's words), `run` (feeds -> outputs in the session's output order).

import { packTensors, unpackTensors } from './protocol.mjs';

// a trap inside the WASM module leaves its heap unusable: the worker must be replaced
const REFUSED_TYPE = /^(Tensor\.type is not supported|unsupported type): /;

export const FATAL = /Aborted\(|RuntimeError: (unreachable|memory access out of bounds)|Out of memory/;

function describe(e) {
  const text = (e && (e.message || String(e))) || 'unknown error';
  return text.trim();
}

export function makeRunner(ort, { readFile, sessionOptions, usePath }) {
  let session = null;

  async function prepare(h) {
    if (session) {
      await session.release().catch(() => {});
      session = null;
    }
    const opts = { ...sessionOptions };
    let source = h.model;
    if (!usePath) {
      source = await readFile(h.model);
      if (h.external && h.external.length) {
        const dir = h.model.replace(/[^/]*$/, '');
        opts.externalData = await Promise.all(h.external.map(async (p) => ({ path: p, data: await readFile(dir + p) })));
      }
    }
    try {
      session = await ort.InferenceSession.create(source, opts);
    } catch (e) {
      return { ok: false, kind: 'unsupported', message: describe(e) };
    }
    return { ok: true, inputs: session.inputNames, outputs: session.outputNames };
  }

  async function run(h, payload) {
    if (!session) return [{ ok: false, kind: 'error', message: 'run before a successful prepare' }, []];
    const got = unpackTensors(h, payload);
    const feeds = {};
    try {
      for (const name of session.inputNames) {
        if (!(name in got)) throw new Error(`no feed for graph input ${name}`);
        const t = got[name];
        feeds[name] = new ort.Tensor(t.dtype, t.data, t.dims);
      }
    } catch (e) {
      return [{ ok: false, kind: 'unsupported', message: describe(e) }, []];
    }
    let results;
    try {
      results = await session.run(feeds);
    } catch (e) {
      // a tensor type the JS API does not take (int4 feeds in onnxruntime-node, int4 outputs in
      // onnxruntime-web) is a refusal, not a failure while computing
      const kind = REFUSED_TYPE.test(describe(e)) ? 'unsupported' : 'error';
      return [{ ok: false, kind, message: describe(e) }, []];
    }
    const list = session.outputNames.map((name) => {
      const t = results[name];
      return { name, dtype: t.type, dims: t.dims, data: t.data };
    });
    const [descs, parts] = packTensors(list);
    for (const t of Object.values(results)) t.dispose?.();
    return [{ ok: true, tensors: descs }, parts];
  }

  return async function handle(h, payload) {
    if (h.op === 'prepare') return [await prepare(h), []];
    if (h.op === 'run') return run(h, payload);
    if (h.op === 'hello') return [{ ok: true, versions: ort.env.versions }, []];
    if (h.op === 'echo') { // the boundary alone: bytes -> ort.Tensor -> bytes, no session
      const got = unpackTensors(h, payload);
      const list = Object.entries(got).map(([name, t]) => {
        const o = new ort.Tensor(t.dtype, t.data, t.dims);
        return { name, dtype: o.type, dims: o.dims, data: o.data };
      });
      const [descs, parts] = packTensors(list);
      return [{ ok: true, tensors: descs }, parts];
    }
    return [{ ok: false, kind: 'error', message: `unknown op ${h.op}` }, []];
  };
}
