"""Load test of ``python -m fashion_conv.serve``: requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients.

    python scripts/load_test.py --checkpoint lightning_logs/cnn/version_0/checkpoints/best.ckpt --onnx model.onnx

Starts the server once per back end (PyTorch from the checkpoint, onnxruntime from the .onnx) on a free port, then
each client sends the same 28x28 PNG (docs/examples/test-row-1.png) as the raw body, one request after another on
a kept-alive connection, for ``--seconds`` per level. The clients run in this one process (asyncio, a minimal
HTTP/1.1 client), on the same CPU as the server. Prints a Markdown table with the CPU and the date.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "docs" / "examples" / "test-row-1.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_args: list[str], workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "fashion_conv.serve", *model_args, "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=REPO)
    for _ in range(600):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read() == b"ok":
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("error: the server did not start")


async def client(port: int, request: bytes, until: float, latencies: list[float], errors: list[str]) -> None:
    """One connection, one request at a time, until ``until``; a latency per answered request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not status.startswith(b"HTTP/1.1 200") or b"Ankle boot" not in body:
                errors.append(status.decode().strip())
    finally:
        writer.close()


async def level(port: int, clients: int, seconds: float) -> dict:
    body = IMAGE.read_bytes()
    request = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []
    began = time.perf_counter()
    await asyncio.gather(*(client(port, request, began + seconds, latencies, errors) for _ in range(clients)))
    elapsed = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100)
    return {"clients": clients, "rps": len(latencies) / elapsed, "p50": cuts[49] * 1e3, "p99": cuts[98] * 1e3, "errors": len(errors)}


def process_cpu(root: int) -> dict[str, float]:
    """CPU seconds used so far by the server's processes, by role: ``root`` and its descendants (Linux /proc)."""
    parent, stat = {}, {}
    for entry in (e for e in Path("/proc").iterdir() if e.name.isdigit()):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        parent[int(entry.name)] = int(fields[1])
        stat[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), cmdline)
    tree, forked = [root], 0
    for pid in sorted(parent):  # children start after their parent: one pass in PID order finds the whole tree
        if parent[pid] in tree and pid != root:
            tree.append(pid)
    used: dict[str, float] = {}
    for pid in tree:
        seconds, cmdline = stat[pid]
        if pid == root:
            role = "main process"
        elif b"resource_tracker" in cmdline:
            role = "resource tracker"
        elif b"multiprocessing.spawn" in cmdline:
            role = "model worker"
        else:  # forked from the main process: first LitServe's queue manager, then the HTTP (uvicorn) processes
            role = "queue manager" if forked == 0 else "HTTP process"
            forked += 1
        used[role] = used.get(role, 0.0) + seconds
    return used


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="PyTorch back end: a .ckpt (the server's --checkpoint)")
    parser.add_argument("--onnx", help="onnxruntime back end: an exported .onnx")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="per level (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers (default 1)")
    args = parser.parse_args(argv)
    backends = [("PyTorch", ["--checkpoint", args.checkpoint]) if args.checkpoint else None,
                ("onnxruntime", ["--onnx", args.onnx]) if args.onnx else None]  # fmt: skip
    rows, loads = [], []
    for name, model_args in filter(None, backends):
        loads.append(os.getloadavg()[0])  # other programs' load on the same cores: these numbers depend on it
        proc, port = start(model_args, args.workers)
        try:
            asyncio.run(level(port, 8, 2.0))  # warm-up: first batches, allocator, caches
            for clients in args.clients:
                before, client_before = process_cpu(proc.pid), time.process_time()
                result = asyncio.run(level(port, clients, args.seconds))
                after, requests = process_cpu(proc.pid), result["rps"] * args.seconds
                used = {role: (after[role] - before.get(role, 0.0)) / requests * 1e6 for role in after}
                used["load-test clients"] = (time.process_time() - client_before) / requests * 1e6
                rows.append({"backend": name, **result, "cpu_us": used})
                print(f"{name}, {clients} clients: {result}; CPU µs per request: "
                      + ", ".join(f"{role} {us:.0f}" for role, us in used.items()), file=sys.stderr, flush=True)  # fmt: skip
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    load = ", ".join(f"{x:.1f}" for x in (*loads, os.getloadavg()[0]))
    print(f"\n{cpu_name()}, {os.cpu_count()} cores, {datetime.date.today()}, --workers {args.workers}; "
          f"1-minute load average at the start, between back ends and at the end: {load}\n")  # fmt: skip
    roles = ["HTTP process", "queue manager", "model worker", "load-test clients"]
    print("| back end | clients | requests/s | p50 ms | p99 ms | errors | CPU µs per request: " + " / ".join(roles) + " |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        cpu = " / ".join(f"{r['cpu_us'].get(role, 0):.0f}" for role in roles)
        print(f"| {r['backend']} | {r['clients']} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} | {cpu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
