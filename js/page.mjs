// The browser half of `node worker.mjs chromium`: poll the local server for a frame, answer it
// with the same runner the Node worker uses, post the reply frame back.
import * as ort from 'onnxruntime-web/webgpu';

import { decode, encode } from './protocol.mjs';
import { FATAL, makeRunner } from './runner.mjs';

const post = (where, body) => fetch(where, { method: 'POST', body });
// what goes wrong outside a request (a failed import, a lost reply) reaches the worker's stderr
addEventListener('error', (e) => post('/log', `error: ${e.message}`));
addEventListener('unhandledrejection', (e) => post('/log', `unhandled rejection: ${e.reason && (e.reason.stack || e.reason)}`));
const origin = location.origin;
ort.env.wasm.wasmPaths = { mjs: `${origin}/ort/ort-wasm-simd-threaded.asyncify.mjs`,
                           wasm: `${origin}/ort/ort-wasm-simd-threaded.asyncify.wasm` };
ort.env.wasm.proxy = false;
ort.env.wasm.numThreads = 1; // a page without cross-origin isolation gets one thread anyway
ort.env.logLevel = 'error';

// ?ep=webgpu: the WebGPU EP, as transformers.js asks for it with device: 'webgpu'; the session's
// verbose log (node placements) is kept, so the cell can say which nodes ORT put on the CPU
const webgpu = new URLSearchParams(location.search).get('ep') === 'webgpu';
const log = [];
if (webgpu) {
  ort.env.logLevel = 'verbose';
  for (const k of ['log', 'info', 'warn', 'error', 'debug']) {
    const orig = console[k].bind(console);
    console[k] = (...args) => { log.push(args.map(String).join(' ')); if (log.length > 20000) log.shift(); orig(...args); };
  }
}

async function adapterInfo() {
  if (!navigator.gpu) return { error: 'navigator.gpu is undefined (WebGPU is off in this browser)' };
  const a = await navigator.gpu.requestAdapter();
  if (!a) return { error: 'navigator.gpu.requestAdapter() returned null (no WebGPU adapter)' };
  const i = a.info || {};
  return { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
           isFallbackAdapter: a.isFallbackAdapter ?? i.isFallbackAdapter ?? null, features: [...a.features].sort() };
}

const handle = makeRunner(ort, {
  usePath: false,
  sessionOptions: webgpu ? { executionProviders: ['webgpu'], logSeverityLevel: 0, logVerbosityLevel: 0 }
    : { executionProviders: ['wasm'], logSeverityLevel: 3 },
  log: webgpu ? log : null,
  readFile: async (p) => {
    const r = await fetch(`/file?p=${encodeURIComponent(p)}`);
    if (!r.ok) throw new Error(`page: cannot fetch ${p} (${r.status})`);
    return new Uint8Array(await r.arrayBuffer());
  },
});

for (;;) {
  let frame;
  try {
    const r = await fetch('/next', { cache: 'no-store' });
    frame = new Uint8Array(await r.arrayBuffer());
  } catch (e) {
    await new Promise((ok) => setTimeout(ok, 200));
    continue;
  }
  const { header, payload } = decode(frame);
  let reply;
  try {
    reply = await handle(header, payload);
  } catch (e) {
    reply = [{ ok: false, kind: 'error', message: String((e && e.stack) || e) }, []];
  }
  if (!reply[0].ok && FATAL.test(reply[0].message)) {
    await post('/fatal', `the WASM module trapped: ${reply[0].message}`);
    break;
  }
  if (header.op === 'hello') {
    if (webgpu) reply[0].adapter = await adapterInfo().catch((e) => ({ error: String(e) }));
    reply[0].userAgent = navigator.userAgent;
    reply[0].crossOriginIsolated = self.crossOriginIsolated;
  }
  await post('/reply', encode(reply[0], reply[1]));
}
