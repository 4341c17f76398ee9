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

const handle = makeRunner(ort, {
  usePath: false,
  sessionOptions: { executionProviders: ['wasm'], logSeverityLevel: 3 },
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
    reply[0].userAgent = navigator.userAgent;
    reply[0].crossOriginIsolated = self.crossOriginIsolated;
  }
  await post('/reply', encode(reply[0], reply[1]));
}
