"""Serve a GGUF file with llama.cpp's OpenAI-compatible server through xllamacpp.

Run by ragpacer's launcher with the engine's own Python; imports nothing from ragpacer.
"""

import argparse
import os
import signal
import threading

import xllamacpp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--alias", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--ctx-size", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = ap.parse_args()

    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.model_alias = args.alias
    p.hostnames = [args.host]
    p.port = args.port
    p.n_parallel = args.parallel  # slots served with continuous batching
    p.n_ctx = args.ctx_size
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.endpoint_metrics = True
    server = xllamacpp.Server(p)  # listens until the process ends
    print(f"llama.cpp listening on {server.listening_address}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
