"""Node-agent benchmark: one run, one model, ratios measured side by side.

    python bench/agent.py [--model smollm2-135m] [--tokens 64]

Prints decode tok/s through the agent vs raw ``mlx_lm.stream_generate``; TTFT of turn 2 of a session
with a ~1k-token prefix vs the same prompt cold; aggregate decode tok/s with 1, 4 and 8 concurrent
streams; the agent's peak RSS. The raw baseline runs in this process (re-exec'd with the same OpenBLAS
preload the agent gets), never at the same time as the agent, and its decode rate is computed exactly as
the agent's ``usage.decode_tps`` is. Every comparison alternates its sides, the order flipping each
round: on a shared 2-core machine the load drifts by more than the difference being measured.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_runtime.agent.launcher import agent_command, agent_env, reexec_with_openblas
from local_runtime.agent.models.registry import resolve

STORY = "Write a long, detailed story about a dragon who learns to bake bread in a small village."
RULE = "Rule {i}: bread number {i} must be baked at dawn and shared with neighbour {i}."
PREFIX = "The following are the rules of the village bakery. " + " ".join(RULE.format(i=i) for i in range(60))


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


class RawBaseline:
    """mlx-lm's own ``stream_generate`` on the same model, in this process."""

    def __init__(self, model_dir: Path) -> None:
        from mlx_lm import load

        self.model, self.tokenizer = load(str(model_dir))[:2]
        self.prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": STORY}],
                                                         add_generation_prompt=True, tokenize=False)

    def decode_tps(self, tokens: int) -> float:
        """Tokens after the first over the time after the first: the agent's ``usage.decode_tps``.

        Not mlx-lm's own ``generation_tps``, which divides all n tokens (the first one included, though
        it came out of prefill) by the n - 1 intervals after the first: 64/63 = 1.6 % high at 64 tokens.
        """
        from mlx_lm import stream_generate

        stamps = [time.perf_counter() for _ in stream_generate(self.model, self.tokenizer, self.prompt,
                                                               max_tokens=tokens)]
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])


class Agent:
    def __init__(self, model: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(agent_command(model, port=self.port, extra=["--max-batch", "8"]),
                                     env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise TimeoutError("agent did not start")

    def stream(self, messages: list[dict[str, Any]], max_tokens: int, session: str | None = None
               ) -> dict[str, Any]:
        body = {"model": "bench", "messages": messages, "stream": True, "session_id": session,
                "sampling": {"max_tokens": max_tokens}, "metadata": {"loop_guard": False}}
        t0 = time.perf_counter()
        first = None
        result: dict[str, Any] = {}
        with httpx.stream("POST", f"{self.base}/agent/v1/generate", json=body, timeout=600) as r:
            for line in r.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] in ("text", "reasoning", "tool_call") and first is None:
                    first = time.perf_counter()
                if event["type"] == "usage":
                    result["usage"] = event["usage"]
        end = time.perf_counter()
        result.update(ttft=(first or end) - t0, start=t0, first=first or end, end=end)
        return result

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def concurrent(agent: Agent, n: int, tokens: int) -> float:
    results: list[dict[str, Any]] = [{} for _ in range(n)]

    def run(i: int) -> None:
        results[i] = agent.stream([user(f"{STORY} Version {i}.")], tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(r["usage"]["completion_tokens"] - 1 for r in results)  # tokens after each first one
    window = max(r["end"] for r in results) - min(r["first"] for r in results)
    return total / window


def main() -> int:
    reexec_with_openblas()
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    model_dir = resolve(args.model)
    print(f"model: {model_dir}")

    raw = RawBaseline(model_dir)
    agent = Agent(str(model_dir))
    try:
        raw.decode_tps(8)
        agent.stream([user(STORY)], 8)  # warm-ups
        # Alternate the two, never concurrently, and compare medians: the machine's load drifts, so the
        # order flips every round (raw-agent, agent-raw, ...) and neither side always goes first.
        raw_runs, agent_runs = [], []
        for i in range(args.rounds):
            for side in (("raw", "agent") if i % 2 == 0 else ("agent", "raw")):
                if side == "raw":
                    raw_runs.append(raw.decode_tps(args.tokens))
                else:
                    agent_runs.append(agent.stream([user(STORY)], args.tokens)["usage"]["decode_tps"])
        raw_tps, agent_tps = statistics.median(raw_runs), statistics.median(agent_runs)
        pairs = sorted(100 * a / r for a, r in zip(agent_runs, raw_runs, strict=True))  # each pair ran back to back
        print(f"decode tok/s (median of {args.rounds}): agent {agent_tps:.2f} vs raw mlx_lm.stream_generate "
              f"{raw_tps:.2f} -> {100 * agent_tps / raw_tps:.0f} % (target >= 95 %); "
              f"agent/raw per round {pairs[0]:.0f}-{pairs[-1]:.0f} % (the machine's noise)")

        session = uuid.uuid4().hex
        system = {"role": "system", "content": [{"type": "text", "text": PREFIX}]}
        turn1 = [system, user("Who bakes at dawn?")]
        first = agent.stream(turn1, 16, session)
        turn2 = [*turn1, {"role": "assistant", "content": [{"type": "text", "text": "The baker."}]},
                 user("And who gets bread number 7?")]
        warm = agent.stream(turn2, 4, session)
        cold = agent.stream(turn2, 4)
        print(f"TTFT turn 2 ({warm['usage']['prompt_tokens']} prompt tokens, "
              f"{warm['usage']['cached_tokens']} cached): {warm['ttft']:.3f} s vs cold {cold['ttft']:.3f} s "
              f"-> {100 * warm['ttft'] / cold['ttft']:.0f} % (target <= 20 %); "
              f"turn 1 TTFT {first['ttft']:.3f} s; cold prefill {cold['usage']['prefill_tps']} tok/s")

        # Twice, the second time in reverse order, averaged: like decode above, so a load spike on the
        # machine does not land on one stream count only.
        runs: dict[int, list[float]] = {1: [], 4: [], 8: []}
        for n in (1, 4, 8, 8, 4, 1):
            runs[n].append(concurrent(agent, n, args.tokens))
        rates = {n: statistics.mean(r) for n, r in runs.items()}
        print("aggregate decode tok/s: " + ", ".join(f"{n} streams {r:.1f}" for n, r in rates.items())
              + f" -> 8 streams = {rates[8] / rates[1]:.2f}x one stream (target >= 3x)")
        print(f"agent peak RSS: {agent.peak_rss() / 2**20:.0f} MiB")
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
