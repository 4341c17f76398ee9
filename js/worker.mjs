// The harness's JS worker: frames (protocol.mjs) in on stdin, out on stdout, one at a time.
//   node worker.mjs node      onnxruntime-node, CPU EP
//   node worker.mjs web       onnxruntime-web as transformers.js 4.3 imports it ('onnxruntime-web/webgpu'),
//                             WASM EP, the asyncify binary, in this Node process
//   node worker.mjs chromium  the same bundle and binary in headless Chromium: this process serves
//                             page.html from 127.0.0.1 and relays each frame to the page
//   node worker.mjs chromium-webgpu  the same page with the WebGPU EP (transformers.js' device: 'webgpu'),
//                             Chromium started with --enable-unsafe-webgpu (a software adapter,
//                             SwiftShader, where the machine has no GPU)
// stdout carries frames only: console output goes to stderr. A trap in the WASM module ends the
// process (the harness records a crash and starts a fresh worker).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { FATAL, makeRunner } from './runner.mjs';
import { decode, encode } from './protocol.mjs';

console.log = console.info = console.warn = console.debug = console.error;

const HERE = path.dirname(fileURLToPath(import.meta.url));
const mode = process.argv[2];
const require = createRequire(import.meta.url);
const loaded = new Set(); // files of the ORT packages this process read: which bundle/binary really loaded

// the files transformers.js 4.3 points env.wasm.wasmPaths at (it uses the jsDelivr copies of these)
export const WASM_FILES = { mjs: 'ort-wasm-simd-threaded.asyncify.mjs', wasm: 'ort-wasm-simd-threaded.asyncify.wasm' };
export const SESSION_OPTIONS = { web: { executionProviders: ['wasm'], logSeverityLevel: 3 },
                                 node: { executionProviders: ['cpu'], logSeverityLevel: 3 } };

// stdout is a pipe that libuv may have made non-blocking: a frame larger than the pipe buffer
// is written in pieces (fs.writeSync can write part of it, or throw EAGAIN while the harness reads)
const pause = new Int32Array(new SharedArrayBuffer(4));
function writeFrame(buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(1, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

function send(header, parts = []) {
  writeFrame(encode(header, parts));
}

function traceReads() {
  const watch = (p) => {
    const s = p instanceof URL ? fileURLToPath(p) : String(p);
    if (s.includes(`${path.sep}onnxruntime-`)) loaded.add(path.relative(HERE, s));
  };
  for (const name of ['readFileSync', 'readFile']) {
    const orig = fs[name];
    fs[name] = function (p, ...rest) { watch(p); return orig.call(this, p, ...rest); };
  }
  const orig = fs.promises.readFile;
  fs.promises.readFile = function (p, ...rest) { watch(p); return orig.call(this, p, ...rest); };
}

async function localRunner() {
  if (mode === 'node') {
    const ort = require('onnxruntime-node');
    loaded.add(path.relative(HERE, require.resolve('onnxruntime-node')));
    return makeRunner(ort, { usePath: true, sessionOptions: SESSION_OPTIONS.node });
  }
  traceReads();
  const entry = import.meta.resolve('onnxruntime-web/webgpu');
  loaded.add(path.relative(HERE, fileURLToPath(entry)));
  const ort = await import(entry);
  const dist = path.dirname(fileURLToPath(entry));
  ort.env.wasm.wasmPaths = { mjs: pathToFileURL(path.join(dist, WASM_FILES.mjs)).href,
                             wasm: pathToFileURL(path.join(dist, WASM_FILES.wasm)).href };
  ort.env.wasm.proxy = false;
  ort.env.wasm.numThreads = 1; // what a page without cross-origin isolation gets
  ort.env.logLevel = 'error';
  return makeRunner(ort, { usePath: false, sessionOptions: SESSION_OPTIONS.web,
                           readFile: async (p) => new Uint8Array(await fs.promises.readFile(p)) });
}

// ---------------------------------------------------------------------------------------------
// chromium: a localhost server, a headless browser polling it for frames

// Chromium switches for WebGPU headless: --enable-unsafe-webgpu alone gives navigator.gpu an
// adapter (SwiftShader's Vulkan, "fallback", on a machine without a GPU); ONNX_COMPAT_WEBGPU_ADAPTER=
// swiftshader forces the software adapter on a machine with a GPU, =system leaves Chromium's choice.
function webgpuSwitches() {
  const want = process.env.ONNX_COMPAT_WEBGPU_ADAPTER || 'system';
  const out = ['--enable-unsafe-webgpu', '--enable-features=Vulkan'];
  if (want === 'swiftshader') out.push('--use-webgpu-adapter=swiftshader', '--use-angle=swiftshader');
  return out;
}

function chromiumRelay(webgpu) {
  const dist = path.dirname(fileURLToPath(import.meta.resolve('onnxruntime-web/webgpu')));
  const queue = []; // frames waiting for the page
  let waiting = null; // the page's pending GET /next
  const pending = []; // ops relayed and not yet answered, in order
  const allowed = new Set(); // model files the page may fetch (those named in prepare frames)
  const TYPES = { '.mjs': 'text/javascript', '.js': 'text/javascript', '.html': 'text/html', '.wasm': 'application/wasm' };
  const static_ = { '/': path.join(HERE, 'page.html'), '/page.mjs': path.join(HERE, 'page.mjs'),
                    '/runner.mjs': path.join(HERE, 'runner.mjs'), '/protocol.mjs': path.join(HERE, 'protocol.mjs') };

  const deliver = () => {
    if (waiting && queue.length) {
      const res = waiting;
      waiting = null;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(queue.shift());
    }
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const body = [];
    req.on('data', (c) => body.push(c));
    req.on('end', () => {
      const p = url.pathname;
      if (DEBUG) process.stderr.write(`relay: ${req.method} ${p} ${Buffer.concat(body).length} bytes\n`);
      if (p === '/next') { waiting = res; deliver(); return; }
      if (p === '/reply') {
        let frame = Buffer.concat(body);
        if (pending.shift() === 'hello') { // the files the page fetched are known only here
          const d = decode(frame);
          frame = Buffer.from(encode({ ...d.header, loaded: [...loaded].sort() }));
        }
        writeFrame(frame);
        res.end();
        return;
      }
      if (p === '/fatal') { process.stderr.write(`page: ${Buffer.concat(body)}\n`); res.end(); process.exit(70); }
      if (p === '/log') { process.stderr.write(`page: ${Buffer.concat(body)}\n`); res.end(); return; }
      let file = static_[p];
      if (!file && p.startsWith('/ort/')) file = path.join(dist, path.basename(p));
      if (!file && p === '/file' && allowed.has(url.searchParams.get('p'))) file = url.searchParams.get('p');
      if (!file || !fs.existsSync(file)) { res.writeHead(404); res.end(); return; }
      if (p.startsWith('/ort/')) loaded.add(path.relative(HERE, file));
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
      fs.createReadStream(file).pipe(res);
    });
  });

  let browser = null;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-compat-chromium-'));
  const cleanup = () => {
    if (browser && browser.exitCode === null) browser.kill('SIGKILL');
    fs.rmSync(profile, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(143));

  server.listen(0, '127.0.0.1', () => {
    const exe = process.env.ONNX_COMPAT_CHROMIUM || 'chromium';
    const gpu = webgpu ? webgpuSwitches() : ['--disable-gpu'];
    browser = spawn(exe, ['--headless', '--no-sandbox', ...gpu, '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-crash-reporter', '--disable-breakpad', `--user-data-dir=${profile}`,
      `http://127.0.0.1:${server.address().port}/${webgpu ? '?ep=webgpu' : ''}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let tail = '';
    browser.stderr.on('data', (c) => { tail = (tail + c).slice(-4000); });
    browser.on('exit', (code, signal) => {
      process.stderr.write(`chromium exited (${signal || code}): ${tail.trim().split('\n').slice(-5).join('\n')}\n`);
      process.exit(71);
    });
  });

  return (frame, header) => {
    if (header.op === 'prepare') {
      allowed.add(header.model);
      const dir = header.model.replace(/[^/]*$/, '');
      for (const e of header.external || []) allowed.add(dir + e);
    }
    pending.push(header.op);
    queue.push(frame);
    deliver();
  };
}

// ---------------------------------------------------------------------------------------------

// tests of the harness's isolation: ONNX_COMPAT_JS_FAULT=crash|hang breaks every `run`
const FAULT = process.env.ONNX_COMPAT_JS_FAULT;
const DEBUG = process.env.ONNX_COMPAT_JS_DEBUG;
function fault() {
  if (FAULT === 'crash') process.kill(process.pid, 'SIGSEGV');
  if (FAULT === 'hang') for (;;) {} // eslint-disable-line no-empty
}

async function main() {
  if (!['node', 'web', 'chromium', 'chromium-webgpu'].includes(mode)) {
    process.stderr.write('usage: node worker.mjs node|web|chromium|chromium-webgpu\n');
    process.exit(2);
  }
  const relay = mode.startsWith('chromium') ? chromiumRelay(mode === 'chromium-webgpu') : null;
  const handle = relay ? null : await localRunner();
  let buf = Buffer.alloc(0);
  let busy = Promise.resolve();
  process.stdin.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    let d;
    while ((d = decode(buf))) {
      const frame = Buffer.from(buf.subarray(0, d.size));
      const { header, payload } = d;
      buf = buf.subarray(d.size);
      if (FAULT && header.op === 'run') fault();
      if (relay) { relay(frame, header); continue; }
      busy = busy.then(async () => {
        let reply;
        try {
          reply = await handle(header, payload);
        } catch (e) {
          reply = [{ ok: false, kind: 'error', message: String(e && e.stack || e) }, []];
        }
        if (!reply[0].ok && FATAL.test(reply[0].message)) {
          process.stderr.write(`${mode}: the WASM module trapped: ${reply[0].message}\n`);
          process.exit(70);
        }
        if (header.op === 'hello') reply[0].loaded = [...loaded].sort();
        send(reply[0], reply[1]);
      });
    }
  });
  // A closed stdin: the harness is gone (it exited without closing this worker, or was killed from
  // outside). In 'web' mode process.exit() never returns once onnxruntime-web has made a session
  // (Node waits on the WASM module's threads: the orphan stayed alive, a core busy, minutes on), so
  // that mode ends with SIGKILL; the others exit normally ('exit' kills Chromium in its modes).
  process.stdin.on('end', () => busy.then(() => (mode === 'web' ? process.kill(process.pid, 'SIGKILL') : process.exit(0))));
}

main().catch((e) => {
  process.stderr.write(`worker ${mode}: ${e && e.stack || e}\n`);
  process.exit(1);
});
