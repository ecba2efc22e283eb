"""``python -m fashion_conv.serve``: classify images over HTTP with a trained model (LitServe), with a page at /.

    python -m fashion_conv.serve --checkpoint lightning_logs/cnn/version_0/checkpoints/best.ckpt --port 8000
    curl -F file=@docs/examples/test-row-1.png http://127.0.0.1:8000/predict

``POST /predict`` takes an image file (multipart field ``file``, or the raw body), preprocessed as ``predict`` does,
or JSON ``{"pixels": [784 integers 0-255]}``; it answers ``predict``'s prediction and top classes as JSON. Requests
that arrive together are classified as one batch. ``GET /health`` answers ``ok`` once the model is loaded. SIGTERM
(or Ctrl-C) stops the server after the requests in flight are answered; the exit status is then 0.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys

from fashion_conv.models.weights import add_model_arguments, checkpoint_tta, load_model
from fashion_conv.utils.errors import FashionConvError

MAX_BATCH = 64
BATCH_TIMEOUT_S = 0.002  # how long a worker waits for a batch to fill: at 32 clients a batch fills in well under that


def build_parser() -> argparse.ArgumentParser:
    description = __doc__.splitlines()[0].split(": ", 1)[1]
    parser = argparse.ArgumentParser(prog="python -m fashion_conv.serve", description=description)
    model = add_model_arguments(parser)
    model.add_argument("--onnx", metavar="ONNX", help="a model exported with --to onnx, run by onnxruntime")
    parser.add_argument(
        "--host", default="127.0.0.1", choices=("127.0.0.1", "0.0.0.0", "::"),
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="model worker processes, each with its own HTTP process (default 1)"
    )
    parser.add_argument(
        "--max-batch", type=int, default=MAX_BATCH, metavar="B",
        help=f"most requests classified together (default {MAX_BATCH}; 1: no batching)",
    )  # fmt: skip
    return parser


def model_loader(args: argparse.Namespace) -> functools.partial:
    """A picklable function that loads the model (the workers call it); called here once, so a bad file fails now."""
    if args.onnx:
        from fashion_conv.models.runtime import OnnxBackbone

        load = functools.partial(OnnxBackbone, args.onnx, threads=1)
    else:
        load = functools.partial(load_model, args.checkpoint, args.weights, args.backbone)
    load()
    return load


def build_server(load, tta_hflip: bool, workers: int = 1, max_batch: int = MAX_BATCH):
    """The LitServer: ``workers`` model processes behind as many HTTP processes, with the page and input checks in front."""
    import litserve as ls

    from fashion_conv.serving.api import FashionAPI
    from fashion_conv.serving.front import Front

    timeout = BATCH_TIMEOUT_S if max_batch > 1 else 0.0
    api = FashionAPI(load, tta_hflip=tta_hflip, max_batch_size=max_batch, batch_timeout=timeout)
    return ls.LitServer(api, accelerator="cpu", workers_per_device=workers, middlewares=[Front], timeout=30)


def stop_on_signals() -> None:
    """SIGTERM takes LitServe's Ctrl-C path: the HTTP processes finish their requests in flight, then all stop.

    The HTTP processes are forked from this one and inherit the handler; uvicorn raises the signal again in them
    once it has shut down, and there it ends the process quietly with status 0.
    """
    main_pid = os.getpid()

    def stop(signum, frame):
        if os.getpid() == main_pid:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a repeated SIGTERM must not cut the shutdown short
            raise KeyboardInterrupt  # LitServer.run catches it and shuts down in order
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1 or args.max_batch < 1:
        print("error: --workers and --max-batch must be at least 1", file=sys.stderr)
        return 2
    if not 1024 <= args.port <= 65535:  # LitServe's range: no privileged ports
        print(f"error: --port {args.port}: choose a port from 1024 to 65535", file=sys.stderr)
        return 2
    try:
        load = model_loader(args)
        tta = checkpoint_tta(args.checkpoint)
        server = build_server(load, tta, args.workers, args.max_batch)
    except FashionConvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"error: serve needs the Python package {exc.name!r}: pip install 'fashion_conv[serve]'", file=sys.stderr)
        return 1
    stop_on_signals()
    print(f"serving on http://{args.host}:{args.port}/ (POST /predict, GET /health); Ctrl-C or SIGTERM stops", flush=True)
    try:
        server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)
    except KeyboardInterrupt:  # a second Ctrl-C during the shutdown
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
