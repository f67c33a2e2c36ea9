"""Transport benchmark: our checked codec over ZeroMQ beside plain pyzmq moving the same bytes.

A sender process pushes messages over tcp://127.0.0.1 to this process. "ours" encodes each
message (header + float32 frame, zero-copy send) and the receiver decodes it with every check
(version, type, sizes, dtype, shape, finiteness); "raw" sends the same bytes as one plain frame
and the receiver only receives them. Both run in the same invocation, alternating rounds, so the
ratio compares like with like.

Beside the throughput it records the CPU time one message costs, summed over every thread of
both processes (the sender's loop, the receiver's loop and both ZeroMQ I/O threads). On a
machine with fewer cores than those four busy threads the throughput of either path is its CPU
cost per message over the cores, so ``cpu_ratio`` (raw's cost over ours) is the ratio the
throughputs tend to once the cores are saturated, and it is far steadier than the wall-clock
rounds, which the scheduler moves by a factor of two on 2 cores (docs/operations.md, "Transport").
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from shared.bench import machine, report
from shared.protocol import MessageType, decode, encode, new_message

SIZES = {"45KB": (9, 5, 250), "4MB": (1024, 1024)}  # 45,000 and 4,194,304 bytes of float32
COMMAND = "make bench-transport"


def _process_cpu_s() -> float:
    """User plus system CPU seconds of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sender(endpoint: str, shape: tuple[int, ...], count: int, mode: str, cpu_s: Any) -> None:
    """Push ``count`` messages; ``cpu_s`` receives the CPU the sending took (setup excluded)."""
    frame = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(endpoint)
    start = _process_cpu_s()
    for i in range(count):
        if mode == "ours":
            msg = new_message(MessageType.EMBEDDINGS, f"q{i}", [frame], trace_id="bench")
            sock.send_multipart(encode(msg), copy=False)
        else:
            sock.send(frame, copy=False)
    sock.close(linger=-1)
    ctx.term()
    cpu_s.value = _process_cpu_s() - start


def _round(shape: tuple[int, ...], count: int, warmup: int, mode: str) -> tuple[float, float]:
    """One timed round: payload gigabits per second seen by the receiver, and the milliseconds
    of CPU one message cost in both processes (the sender's share pro rata over its messages)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    spawn = mp.get_context("spawn")
    sender_cpu_s = spawn.Value("d", 0.0)
    proc = spawn.Process(
        target=_sender,
        args=(f"tcp://127.0.0.1:{port}", shape, warmup + count, mode, sender_cpu_s),
    )
    proc.start()
    receive = (
        (lambda: decode(sock.recv_multipart(copy=False)))
        if mode == "ours"
        else (lambda: sock.recv(copy=False))
    )
    for _ in range(warmup):
        receive()
    start, cpu_start = time.perf_counter(), _process_cpu_s()
    for _ in range(count):
        receive()
    elapsed, receiver_cpu_s = time.perf_counter() - start, _process_cpu_s() - cpu_start
    proc.join()
    sock.close()
    ctx.term()
    payload = int(np.prod(shape)) * 4 * count
    cpu_ms = (receiver_cpu_s / count + sender_cpu_s.value / (warmup + count)) * 1e3
    return payload * 8 / elapsed / 1e9, cpu_ms


def measure(total_bytes: int = 1 << 30, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Median of ``rounds`` alternating rounds per size, ~``total_bytes`` moved per round."""
    results: dict[str, dict[str, float]] = {}
    for label, shape in SIZES.items():
        nbytes = int(np.prod(shape)) * 4
        count = max(200, total_bytes // nbytes)
        warmup = max(10, count // 20)
        ours, raw = [], []
        for _ in range(rounds):
            ours.append(_round(shape, count, warmup, "ours"))
            raw.append(_round(shape, count, warmup, "raw"))
        o, r = (statistics.median(gbps for gbps, _ in runs) for runs in (ours, raw))
        o_cpu, r_cpu = (statistics.median(cpu for _, cpu in runs) for runs in (ours, raw))
        results[label] = {
            "ours_gbps": round(o, 3),
            "raw_gbps": round(r, 3),
            "ratio": round(o / r, 3),
            "ours_cpu_ms": round(o_cpu, 4),
            "raw_cpu_ms": round(r_cpu, 4),
            "cpu_ratio": round(r_cpu / o_cpu, 3),
        }
    return results


def _plot(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(x - 0.2, [results[k]["raw_gbps"] for k in labels], 0.4, label="plain pyzmq")
    ax.bar(x + 0.2, [results[k]["ours_gbps"] for k in labels], 0.4, label="geopol codec + checks")
    ax.set_xticks(x, labels)
    ax.set_ylabel("Gbit/s (payload)")
    ax.set_title("Transport over tcp://127.0.0.1")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(results: dict[str, dict[str, float]], host: dict[str, object]) -> str:
    rows = "\n".join(
        f"| {k} | {v['ours_gbps']:.2f} | {v['raw_gbps']:.2f} | {v['ratio']:.2f} | "
        f"{v['ours_cpu_ms']:.3f} | {v['raw_cpu_ms']:.3f} | {v['cpu_ratio']:.2f} |"
        for k, v in results.items()
    )
    return (
        "## transport\n\n"
        f"Reproduce: `{COMMAND}`. Machine: {host['cpu']}, {host['cores']} cores.\n"
        "Payload Gbit/s over tcp://127.0.0.1, sender and receiver in separate processes; "
        "target ratio ≥ 0.8 at 4 MB. CPU ms: one message's CPU time in both processes, every "
        "thread; cpu ratio = plain over ours, the ratio a saturated machine tends to.\n\n"
        "| message | ours Gbit/s | plain pyzmq Gbit/s | ratio | ours CPU ms | plain CPU ms "
        "| cpu ratio |\n|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n![transport](transport.png)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geopol bench transport", description=__doc__)
    parser.add_argument(
        "--reports",
        type=Path,
        default=report.REPORTS_DIR,
        help="folder for bench.json, bench.md and figures (default: reports)",
    )
    parser.add_argument(
        "--megabytes",
        type=int,
        default=1024,
        help="payload moved per round and size (default: 1024)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median kept)")
    args = parser.parse_args(argv)
    host = machine.record(args.reports)
    results = measure(args.megabytes << 20, args.rounds)
    path = report.write_section("transport", results, _markdown(results, host), args.reports)
    _plot(results, args.reports / "transport.png")
    for label, row in results.items():
        print(
            f"{label:>5}: ours {row['ours_gbps']:.2f} Gbit/s, raw {row['raw_gbps']:.2f} "
            f"Gbit/s, ratio {row['ratio']:.2f}; CPU per message ours {row['ours_cpu_ms']:.3f} "
            f"ms, raw {row['raw_cpu_ms']:.3f} ms, cpu ratio {row['cpu_ratio']:.2f}"
        )
    print(f"wrote {path}")
    return 0
