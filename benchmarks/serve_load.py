"""Load on `blockgen serve`: aggregate tokens/s and time to first token with 1, 4 and 16 concurrent streaming clients,
against the same requests served one after another (1 client), printed as ratios.

The server runs as its own process (`blockgen serve`, the model's automatic dtype); this process only sends requests
(the `openai` client, streaming, greedy) and reads the answers, so the two do not share an interpreter. Every mode
sends the same requests, each asking for a long answer of at most --max-tokens tokens; with c clients, each client
sends its share back to back (a closed loop); modes are two seconds apart. Time to first token is measured from
sending the request to its first piece of text. A request that does not end with a finish reason is counted as lost.
Answers are also compared with the ones served one after another (greedy decoding; a batch of rows can round
differently in bfloat16).

Usage: python benchmarks/serve_load.py [--model default] [--requests 32] [--max-tokens 64] [--clients 1 4 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
from openai import AsyncOpenAI

TOPICS = ["the tides", "volcanoes", "honey bees", "the water cycle", "lighthouses", "glaciers", "coral reefs",
          "the printing press", "solar eclipses", "rainforests", "the Roman roads", "bread baking", "migrating birds",
          "deep sea fish", "windmills", "the first telescopes"]


def _requests(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Write a detailed explanation of {TOPICS[i % len(TOPICS)]} for a curious "
              f"student{'' if i < len(TOPICS) else ', with an example'}."}] for i in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(model: str, port: int, max_batch: int, jobs_dir: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "blockgen.cli", "serve", "--model", model, "--port", str(port),
               "--max-batch", str(max_batch), "--log-level", "warning", "--jobs-dir", jobs_dir]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the server did not come up in 10 minutes")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.25)


async def _one(client: AsyncOpenAI, model: str, messages: list[dict], max_tokens: int) -> dict:
    start = time.perf_counter()
    first, text, reason, tokens = None, "", None, 0
    stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                  temperature=0, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices:
            piece = chunk.choices[0].delta.content or ""
            if piece and first is None:
                first = time.perf_counter() - start
            text += piece
            reason = chunk.choices[0].finish_reason or reason
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return {"text": text, "reason": reason, "tokens": tokens, "ttft": first if first is not None else float("nan")}


async def _mode(url: str, model: str, requests: list[list[dict]], clients: int, max_tokens: int) -> dict:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=3600)
    queue = list(enumerate(requests))
    results: dict[int, dict] = {}

    async def worker():
        while queue:
            i, messages = queue.pop(0)
            try:
                results[i] = await _one(client, model, messages, max_tokens)
            except Exception as exc:  # counted as lost
                results[i] = {"text": "", "reason": None, "tokens": 0, "ttft": float("nan"), "error": repr(exc)}

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    seconds = time.perf_counter() - start
    await client.close()
    answers = [results[i] for i in range(len(requests))]
    ttfts = sorted(a["ttft"] for a in answers if a["reason"] is not None)
    tokens = sum(a["tokens"] for a in answers)
    return {"clients": clients, "seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds,
            "ttft_p50": statistics.median(ttfts), "ttft_p99": _percentile(ttfts, 0.99),
            "lost": sum(a["reason"] is None for a in answers), "answers": answers}


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, -(-len(sorted_values) * q // 1))
    return sorted_values[int(rank) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--requests", type=int, default=32, help="requests sent in every mode")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--url", help="an already running server instead of starting one (its --model must match)")
    args = parser.parse_args()
    modes = sorted(set(args.clients) | {1})
    process, jobs_dir = None, tempfile.mkdtemp(prefix="blockgen-serve-load-")
    try:
        if args.url is None:
            port = _free_port()
            process = _start_server(args.model, port, max(modes), jobs_dir)
            url = f"http://127.0.0.1:{port}"
        else:
            url = args.url.rstrip("/")
        requests = _requests(args.requests)
        # warm up: a single request, then a full-width burst (kernels, allocations, the tokenizer)
        asyncio.run(_mode(url, args.model, requests[:1], 1, 8))
        asyncio.run(_mode(url, args.model, requests[: max(modes)], max(modes), 8))
        rows = []
        for clients in modes:
            time.sleep(2)  # a quiet spell: each mode starts as a burst, not in the previous mode's rhythm
            rows.append(asyncio.run(_mode(url, args.model, requests, clients, args.max_tokens)))
        health = httpx.get(f"{url}/health").json()
    finally:
        try:
            if process is not None:
                process.send_signal(signal.SIGINT)
                process.wait(60)
        finally:
            shutil.rmtree(jobs_dir, ignore_errors=True)
    base = rows[0]
    print(f"blockgen serve, model {args.model}; {args.requests} streaming chat requests of up to {args.max_tokens} "
          f"tokens (greedy) per mode; {os.cpu_count()} CPUs; largest batch {health['largest_batch']}")
    print("| clients | tokens | seconds | aggregate tokens/s | x one after another | TTFT p50 s | TTFT p99 s | "
          "p50 x | lost | answers equal to one after another |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        same = sum(a["text"] == b["text"] for a, b in zip(row["answers"], base["answers"], strict=True))
        label = f"{row['clients']} (one after another)" if row is base else str(row["clients"])
        print(f"| {label} | {row['tokens']} | {row['seconds']:.1f} | {row['tokens_per_second']:.1f} | "
              f"{row['tokens_per_second'] / base['tokens_per_second']:.2f} | {row['ttft_p50']:.3f} | "
              f"{row['ttft_p99']:.3f} | {row['ttft_p50'] / base['ttft_p50']:.2f} | {row['lost']} | "
              f"{same}/{len(row['answers'])} |")


if __name__ == "__main__":
    main()
