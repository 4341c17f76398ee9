#!/usr/bin/env python3
"""A stand-in for the `tract` executable (which cannot be built here): it accepts the CLI's
real flags and answers the way tract does. FAKE_TRACT_MODE: ok (run with onnxruntime), wrong
(outputs off by 1%), refuse (a typing error), fail (a run-time error), segv (killed by SIGSEGV),
rename (outputs under tract-style renamed keys)."""

import os
import signal
import sys

args = sys.argv[1:]
if args == ["--version"]:
    print("tract 0.0.0-fake")
    sys.exit(0)
mode = os.environ.get("FAKE_TRACT_MODE", "ok")
model = args[0]
fin = args[args.index("--input-from-bundle") + 1]
fout = args[args.index("--save-outputs-npz") + 1]
assert "run" in args and "--input-facts-from-bundle" in args
if mode == "refuse":
    sys.stderr.write('Error: Translating node #3 "y" GroupQueryAttention ToTypedTranslator\n\nCaused by:\n'
                     '    GroupQueryAttention: softcap is unsupported\n\nStack backtrace:\n   0: anyhow::x\n')
    sys.exit(1)
if mode == "fail":
    sys.stderr.write("Error: Evaluating #3 \"y\": index out of bounds\n")
    sys.exit(1)
if mode == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
feeds = dict(np.load(fin))
names = [o.name for o in sess.get_outputs()]
outs = sess.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}})
if mode == "wrong":
    outs = [o * 1.01 for o in outs]
keys = [f"{n}.renamed" for n in names] if mode == "rename" else names
np.savez(fout, **dict(zip(keys, outs)))
