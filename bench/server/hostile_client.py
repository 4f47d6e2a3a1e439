#!/usr/bin/python3
"""A hostile client for the load test of #16 (bench/server/hostile_load.sh):
runs, until SIGTERM or --seconds, four kinds of abuse at once against one
sinkserve-server, from one client identity:

  max-size   opens sessions with the largest window the server allows
             (--max-window) and a prompt of the largest size, lets it
             prefill for 2 s, then drops the stream without a goodbye;
  stops      turns with as many stop strings as the server takes, each as
             long as the byte cap allows, 256 tokens each;
  half-open  holds --half-open TCP connections that never speak (reopened as
             the server's handshake timeout closes them);
  drops      opens a stream, starts an endless turn, reads one delta and
             cancels the call (a client that vanishes mid-turn).

Every refusal the server answers (RESOURCE_EXHAUSTED for the per-client
quota or the KV budget, INVALID_ARGUMENT for over-limit requests) is
counted, not an error. At the end it prints one JSON line of counts.
"""
import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "server"))
from grpc_harness import Stream, import_grpc, load_messages  # noqa: E402

grpc = import_grpc()


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n


def server_limits(channel, msgs):
    get = channel.unary_unary("/sinkserve.v1.ChatService/GetServerInfo",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=msgs["ServerInfo"].FromString)
    return get(msgs["GetServerInfoRequest"](), timeout=10)


def outcome(counts, kind, stream):
    _, code, _ = stream.drain()
    counts.add(f"{kind}:{code.name}")


def max_size(stop, channel, msgs, info, counts):
    prompt = ("Once upon a time there was a dragon. " * 100000)[:info.max_prompt_bytes]
    while not stop.is_set():
        s = Stream(channel, msgs, timeout=30)
        r = msgs["ChatRequest"]()
        r.open.cache.sink_tokens = 4
        r.open.cache.window_tokens = info.max_window_tokens
        s.put(r)
        t = msgs["ChatRequest"]()
        t.turn.text = prompt
        t.turn.raw = True
        t.turn.max_new_tokens = 8
        s.put(t)
        # Let it prefill for 2 s, then drop it: the session stays detached
        # (and holds its cache) until the server reclaims it.
        timer = threading.Timer(2.0, s.responses.cancel)
        timer.start()
        try:
            first = s.next()
            counts.add("max-size:" + first.WhichOneof("kind"))
            for _ in s.responses:
                pass
        except (grpc.RpcError, StopIteration) as e:
            counts.add("max-size:" + (e.code().name if isinstance(e, grpc.RpcError) else "ended"))
        timer.cancel()
        s.responses.cancel()
        s.close()


def new_session(channel, msgs, timeout, max_new):
    """A stream that opens a session with the defaults, and a turn for it
    (not yet sent) of `max_new` tokens that ignores EOS."""
    s = Stream(channel, msgs, timeout=timeout)
    r = msgs["ChatRequest"]()
    r.open.SetInParent()
    s.put(r)
    t = msgs["ChatRequest"]()
    t.turn.text = "Once upon a time"
    t.turn.raw = True
    t.turn.ignore_eos = True
    t.turn.max_new_tokens = max_new
    return s, t


def stops(stop, channel, msgs, info, counts):
    while not stop.is_set():
        s, t = new_session(channel, msgs, timeout=60, max_new=256)
        # As many stop strings as allowed, each as long as the byte cap lets them be.
        n = max(1, info.max_stop_strings)
        size = max(1, min(info.max_stop_bytes // n, 4096))
        t.turn.stop.extend([(f"{i:06d}" + "z" * size)[:size] for i in range(n)])
        s.put(t)
        s.close()
        try:
            for resp in s.responses:
                if stop.is_set():
                    s.responses.cancel()
                    break
                if resp.WhichOneof("kind") == "done":
                    counts.add("stops:done")
        except grpc.RpcError as e:
            counts.add(f"stops:{e.code().name}")


def half_open(stop, port, n, counts):
    socks = []
    while not stop.is_set():
        alive = []
        for sock in socks:
            try:
                while sock.recv(65536, socket.MSG_DONTWAIT):  # the server's SETTINGS, then its GOAWAY
                    pass
                sock.close()  # b"": the server closed it
                counts.add("half-open:closed-by-server")
                continue
            except BlockingIOError:
                alive.append(sock)
            except OSError:
                sock.close()
                counts.add("half-open:closed-by-server")
        socks = alive
        while len(socks) < n and not stop.is_set():
            try:
                socks.append(socket.create_connection(("::1", port), timeout=5))
                counts.add("half-open:opened")
            except OSError:
                counts.add("half-open:connect-failed")
                break
        stop.wait(0.2)
    for sock in socks:
        sock.close()


def drops(stop, channel, msgs, counts):
    while not stop.is_set():
        s, t = new_session(channel, msgs, timeout=30, max_new=100000)
        s.put(t)
        try:
            s.next()  # opened
            s.next()  # the first delta
            counts.add("drops:dropped-mid-turn")
        except (grpc.RpcError, StopIteration) as e:
            counts.add("drops:" + (e.code().name if isinstance(e, grpc.RpcError) else "ended"))
        s.responses.cancel()
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="[::1]", help="where to connect (a different identity from the bench's)")
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--half-open", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--kinds", default="max-size,stops,half-open,drops", help="which abuse to run (comma-separated)")
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts = Counts()
    with tempfile.TemporaryDirectory() as work:
        msgs, _ = load_messages(args.proto_dir, work)
    channels = [grpc.insecure_channel(f"{args.host}:{args.port}") for _ in range(3)]
    grpc.channel_ready_future(channels[0]).result(timeout=10)
    info = server_limits(channels[0], msgs)
    kinds = {
        "max-size": (max_size, (stop, channels[0], msgs, info, counts)),
        "stops": (stops, (stop, channels[1], msgs, info, counts)),
        "half-open": (half_open, (stop, args.port, args.half_open, counts)),
        "drops": (drops, (stop, channels[2], msgs, counts)),
    }
    chosen = args.kinds.split(",")
    for kind in chosen:
        if kind not in kinds:
            ap.error(f"unknown kind {kind!r}; choose from {', '.join(kinds)}")
    workers = [threading.Thread(target=kinds[k][0], args=kinds[k][1], daemon=True) for k in chosen]
    for w in workers:
        w.start()
    print("hostile: running", flush=True)
    # Short waits, so the main thread gets to run the SIGTERM handler.
    deadline = time.monotonic() + args.seconds
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.2)
    stop.set()
    for w in workers:
        w.join(timeout=10)
    stuck = sum(w.is_alive() for w in workers)
    if stuck:
        counts.add("workers-stuck-at-exit", stuck)
    print(json.dumps(dict(sorted(counts.c.items()))), flush=True)
    os._exit(0)  # gRPC's own threads must not hold the exit


if __name__ == "__main__":
    main()
