"""`whispertune serve`: OpenAI's audio transcription API (and a web page) over a model, adapter or export."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from ..config import QuantizationMode
from .arg_types import BATCH_SIZE, float_in, int_in

DEFAULT_MODEL = "embedded:whisper-base"
OPENAI_MODEL = "whisper-1"  # what OpenAI clients send by default; accepted as a name of the served model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP: OpenAI's /v1/audio/transcriptions, /health and a web page at /",
        description="Serve a model (Hub id, directory, embedded:NAME, a merged model or a CTranslate2 export, "
        "the last through faster-whisper when it is installed) or a LoRA adapter on its base. Requests arriving "
        "together are transcribed in one batch. Any OpenAI client works: base_url=http://HOST:PORT/v1.",
    )
    parser.add_argument("--model", metavar="M", help=f"Hub id, directory or embedded:NAME (default: the adapter's "
                        f"base, else {DEFAULT_MODEL})")
    parser.add_argument("--adapter", metavar="A", help="LoRA adapter directory or Hub id")
    parser.add_argument("--name", help=f"the model name requests send (default: the adapter or model as given; "
                        f"{OPENAI_MODEL!r} is always accepted too)")
    parser.add_argument("--language", help="language for requests that give none (default: adapter's, else detected)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int_in(1, 65535), default=8000)
    parser.add_argument("--quantization", choices=typing.get_args(QuantizationMode), default="none")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--batch-size", type=BATCH_SIZE, default=8, metavar="N",
                        help="requests (30 s windows) per model call")
    parser.add_argument("--batch-wait-ms", type=float_in(0.0, 1000.0), default=10.0, metavar="MS",
                        help="how long the first request of a batch waits for others, 0 to 1000 ms")
    parser.add_argument("--max-file-mb", type=float_in(0.0, 1024.0, lo_open=True), default=25.0, metavar="MB",
                        help="largest upload (413 above), up to 1024 MB")
    parser.add_argument("--max-seconds", type=float_in(0.0, 4 * 3600.0, lo_open=True), default=600.0, metavar="S",
                        help="longest audio (400 above), up to 4 hours")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: `whispertune --help` must not import fastapi, uvicorn or transformers
    import uvicorn

    from ..inference.options import LoadOptions
    from ..serve.app import Limits, create_app
    from ..serve.backends import load_backend
    from ..serve.batcher import Batcher
    from ..serve.memory import steady_malloc

    steady_malloc()  # before the model and the request threads allocate
    model = args.model or (None if args.adapter else DEFAULT_MODEL)
    backend = load_backend(model, args.adapter, LoadOptions(quantization=args.quantization, device=args.device,
                                                            language=args.language), args.batch_size)
    name = args.name or (Path(args.adapter).name if args.adapter else model)
    names = tuple(dict.fromkeys([name, OPENAI_MODEL]))
    batcher = Batcher(backend.transcribe, max_batch=args.batch_size, wait_seconds=args.batch_wait_ms / 1000)
    app = create_app(backend, batcher, names, Limits(max_file_bytes=int(args.max_file_mb * 2**20),
                                                     max_seconds=args.max_seconds))
    print(f"whispertune serve: {name} on {backend.device}, http://{args.host}:{args.port}/ "
          f"(API base_url http://{args.host}:{args.port}/v1)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        batcher.close()
    return 0
