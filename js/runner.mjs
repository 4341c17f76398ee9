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

// ORT's verbose log says where nodes went: "Node(s) placed on [CPUExecutionProvider]. Number of
// nodes: N" followed by one "  OpType (node name)" line per node
const PLACED = /Node\(s\) placed on \[(\w+)\]\. Number of nodes: (\d+)/;
const ALL_PLACED = /All nodes placed on \[(\w+)\]\. Number of nodes: (\d+)/;

export function placements(lines) {
  const out = {};
  for (let i = 0; i < lines.length; i++) {
    const all = ALL_PLACED.exec(lines[i]);
    if (all) { out[all[1]] = { count: Number(all[2]), nodes: [] }; continue; }
    const m = PLACED.exec(lines[i]);
    if (!m) continue;
    const nodes = [];
    for (let j = i + 1; j < lines.length && nodes.length < Number(m[2]); j++) {
      const n = /VerifyEachNodeIsAssignedToAnEp\]\s+(\S+ \(.*\))\s*$/.exec(lines[j]);
      if (n) nodes.push(n[1]);
    }
    out[m[1]] = { count: Number(m[2]), nodes };
  }
  return out;
}

export function makeRunner(ort, { readFile, sessionOptions, usePath, log = null }) {
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
    if (log) log.length = 0;
    try {
      session = await ort.InferenceSession.create(source, opts);
    } catch (e) {
      return { ok: false, kind: 'unsupported', message: describe(e) };
    }
    const reply = { ok: true, inputs: session.inputNames, outputs: session.outputNames };
    if (log) {
      reply.placement = placements(log);
      reply.logLines = log.length;
      log.length = 0;
    }
    return reply;
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
