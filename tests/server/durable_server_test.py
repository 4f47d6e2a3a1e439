#!/usr/bin/python3
"""Durable sessions and replicas (#13), against real sinkserve-server processes.

  --case restart   20 conversations of 3 turns on a server with a SQLite
                   store; SIGKILL between turns; a new server on the same
                   directory continues every conversation exactly. Then
                   SIGKILL while 20 turns run: no turn whose done reached
                   the client is lost, and each conversation goes on from
                   what the store holds exactly.
  --case memory    2,000 conversations on a server holding at most 64 in
                   memory: all stay resumable (and resume exactly), and
                   RSS stays within the 64-conversation figure plus 10%.
  --case failover  Redis, two replicas and HAProxy (deploy/haproxy/haproxy.cfg)
                   on loopback: 16 clients converse through the proxy; one
                   replica is killed between turns, then (restarted) while
                   turns run; every client goes on exactly on the survivor;
                   an HTTP conversation restating its whole history too.

Every turn is its own stream (as a client that reconnects), greedy, raw
text, EOS ignored; the reference is the same conversation on a server
without a store, never interrupted. Redis and HAProxy come from the Debian
packages scripts/setup.sh installs; the test skips (77) only when a binary
is missing.
"""
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_harness import import_grpc, load_messages, skip, start_server, stop_server, test_args  # noqa: E402

SINKS, WINDOW = 4, 60
TOKENS = 40


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompt(c, k):
    return f" Story {c}, part {k}: the little cat"


def tokens_for(k):
    """Turns 0-3 are short; later ones long enough that a kill lands inside them."""
    return TOKENS if k < 4 else 160


class Client:
    """Turns as separate streams over one channel (through a proxy or not)."""

    def __init__(self, grpc, msgs, address):
        self.grpc, self.msgs = grpc, msgs
        self.channel = grpc.insecure_channel(address)
        self.chat = self.channel.stream_stream(
            "/sinkserve.v1.ChatService/Chat", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=msgs["ChatResponse"].FromString)

    def turn(self, sid, text, tokens=TOKENS, timeout=60, window=WINDOW):
        """One stream: open (new when sid is empty), one turn, close.
        Returns (opened, ids, done, seconds)."""
        m = self.msgs
        open_req = m["ChatRequest"]()
        open_req.open.session_id = sid
        if not sid:
            open_req.open.cache.sink_tokens = SINKS
            open_req.open.cache.window_tokens = window
        turn_req = m["ChatRequest"]()
        turn_req.turn.text = text
        turn_req.turn.raw = True
        turn_req.turn.max_new_tokens = tokens
        turn_req.turn.ignore_eos = True
        turn_req.turn.sampling.temperature = 0
        metadata = [("x-session-id", sid)] if sid else []
        start = time.monotonic()
        responses = self.chat(iter([open_req, turn_req]), timeout=timeout, metadata=metadata)
        opened, ids, done = None, [], None
        for r in responses:
            kind = r.WhichOneof("kind")
            if kind == "opened":
                opened = r.opened
            elif kind == "delta":
                ids.extend(r.delta.token_ids)
            elif kind == "done":
                done = r.done
                break
        responses.cancel()
        if opened is None or done is None:
            raise RuntimeError(f"stream ended without {'opened' if opened is None else 'done'}")
        return opened, ids, done, time.monotonic() - start


def reference(grpc, msgs, binary, shared, conversations, turns, window=WINDOW, tokens=tokens_for):
    """ids[c][k] of every turn, never interrupted, on a server without a store."""
    proc, port, _ = start_server(binary, shared)
    try:
        client = Client(grpc, msgs, f"127.0.0.1:{port}")

        def run(c):
            sid, out = "", []
            for k in range(turns):
                opened, ids, _, _ = client.turn(sid, prompt(c, k), tokens=tokens(k), window=window)
                sid = opened.session_id
                out.append(list(ids))
            return out

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(run, range(conversations)))
    finally:
        stop_server(proc)


def kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)


# ---- restart ---------------------------------------------------------------

def case_restart(grpc, msgs, args, shared, work):
    n, turns = 20, 30
    ref = reference(grpc, msgs, args.server_binary, shared, n, turns)
    store = ["--session-store", f"sqlite:{work}/data"]

    # Three turns each, then SIGKILL between turns.
    proc, port, _ = start_server(args.server_binary, shared, extra=store)
    client = Client(grpc, msgs, f"127.0.0.1:{port}")
    sids = [""] * n

    def three(c):
        for k in range(3):
            opened, ids, done, _ = client.turn(sids[c], prompt(c, k))
            sids[c] = opened.session_id
            check(list(ids) == ref[c][k], f"conversation {c} turn {k} differs before any restart")
            check(done.saved, f"conversation {c} turn {k}: done.saved is false")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(three, range(n)))
    kill9(proc)

    proc, port, _ = start_server(args.server_binary, shared, extra=store)
    client = Client(grpc, msgs, f"127.0.0.1:{port}")
    restored = 0
    for c in range(n):
        opened, ids, done, _ = client.turn(sids[c], prompt(c, 3))
        check(opened.resumed and opened.last_turn.turn == 3, f"conversation {c}: resumed at turn {opened.last_turn.turn}")
        restored += opened.restored == 1  # RESTORE_KIND_EXACT
        check(list(ids) == ref[c][3], f"conversation {c}: turn 4 after the restart differs from the uninterrupted one")
    check(restored == n, f"{restored} of {n} conversations were restored exactly")
    print(f"restart between turns: {n} conversations continued exactly")

    # SIGKILL while turns run: what each client saw acknowledged, then what
    # the store kept.
    acked = [3 + 1] * n  # turns whose done the client has seen
    stop = threading.Event()

    def more(c):
        for k in range(4, turns):
            if stop.is_set():
                return
            try:
                _, ids, done, _ = client.turn(sids[c], prompt(c, k), tokens=tokens_for(k))
            except Exception:  # the server died under this turn
                return
            check(list(ids) == ref[c][k], f"conversation {c} turn {k} differs")
            acked[c] = k + 1

    threads = [threading.Thread(target=more, args=(c,)) for c in range(n)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    kill9(proc)
    for t in threads:
        t.join()
    proc, port, _ = start_server(args.server_binary, shared, extra=store)
    try:
        client = Client(grpc, msgs, f"127.0.0.1:{port}")
        ahead = 0
        for c in range(n):
            k = min(acked[c], turns - 1)
            opened, ids, _, _ = client.turn(sids[c], prompt(c, k), tokens=tokens_for(k))
            stored = opened.last_turn.turn
            check(stored >= acked[c], f"conversation {c}: the client saw turn {acked[c]} done, the store has {stored}")
            ahead += stored > acked[c]
            if stored == acked[c] and acked[c] < turns:
                check(list(ids) == ref[c][acked[c]], f"conversation {c}: turn {acked[c] + 1} after the kill differs")
            elif stored < turns:
                # The store saved a turn whose done the kill kept from the
                # client: the turn sent now is a new one, judged by length.
                check(opened.last_turn.reason != 0, f"conversation {c}: stored turn {stored} unfinished")
        print(f"kill during turns: acked turns {sorted(acked)}; nothing acknowledged lost; {ahead} stored one turn "
              "the client had not seen done")
    finally:
        stop_server(proc)


# ---- memory ----------------------------------------------------------------

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metrics(line):
    """name{labels} -> value from the server's /metrics (its HTTP port from the startup line)."""
    port = int(re.search(r" http=\S*:(\d+)", line).group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        out = {}
        for row in r.read().decode().splitlines():
            if row and not row.startswith("#"):
                name, value = row.rsplit(" ", 1)
                out[name] = float(value)
        return out


def sanitized(binary):
    """Whether the server was built with ASan or TSan (their runtimes' symbols)."""
    with open(binary, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__tsan_init" in data


def case_memory(grpc, msgs, args, shared, work):
    total, resident = 2000, 64
    window = 252  # the default cache: about 400 KiB per session on stories260K
    proc, port, line = start_server(args.server_binary, shared,
                                 extra=["--session-store", f"sqlite:{work}/data", "--max-sessions", str(resident),
                                        "--max-sessions-per-client", "0"])
    try:
        client = Client(grpc, msgs, f"127.0.0.1:{port}")
        sids, first = [""] * total, [None] * total

        def open_one(c):
            opened, ids, _, _ = client.turn("", prompt(c, 0), tokens=8, window=window)
            sids[c], first[c] = opened.session_id, list(ids)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(open_one, range(resident)))
        time.sleep(0.5)
        rss_resident = rss_kib(proc.pid)
        m = metrics(line)
        per_session = m["sinkserve_kv_cache_bytes"] / m["sinkserve_sessions"]
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(open_one, range(resident, total)))
        opened_s = time.monotonic() - start
        rss_all = rss_kib(proc.pid)
        # Every one resumes, restored from the store: the same first ids as
        # its twin that opened the same way, and a second turn.
        restore_ms = []

        def resume(c):
            opened, ids, _, seconds = client.turn(sids[c], prompt(c, 1), tokens=8)
            check(opened.resumed and opened.last_turn.turn == 1, f"conversation {c} did not resume")
            if opened.restored == 1:
                restore_ms.append(seconds * 1000)
            return list(ids)

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            seconds_ids = list(pool.map(resume, range(total)))
        resumed_s = time.monotonic() - start
        rss_after = rss_kib(proc.pid)
        check(len(seconds_ids) == total, "not every conversation resumed")
        # The same prompt on a fresh session gives the same second turn.
        for c in (0, 1, total - 1):
            opened, _, _, _ = client.turn("", prompt(c, 0), tokens=8, window=window)
            _, ids, _, _ = client.turn(opened.session_id, prompt(c, 1), tokens=8)
            check(list(ids) == seconds_ids[c], f"conversation {c}: its restored second turn differs")
        m = metrics(line)
        loads = m['sinkserve_session_store_seconds_count{op="load"}']
        load_ms = 1000 * m['sinkserve_session_store_seconds_sum{op="load"}'] / loads
        saves = m['sinkserve_session_store_seconds_count{op="save"}']
        save_ms = 1000 * m['sinkserve_session_store_seconds_sum{op="save"}'] / saves
        limit = rss_resident * 1.10
        print(f"memory: RSS {rss_resident} KiB with {resident} conversations, {rss_all} KiB with {total} open, "
              f"{rss_after} KiB after all {total} resumed (limit {limit:.0f}); opening {total - resident} took "
              f"{opened_s:.1f} s, resuming {total} took {resumed_s:.1f} s (8 clients); restored {len(restore_ms)}, a "
              f"turn with its restore {statistics.median(restore_ms):.1f} ms median; store load (read + decode) "
              f"{load_ms:.2f} ms mean over {loads:.0f}, save (turn end to durable) {save_ms:.2f} ms mean over "
              f"{saves:.0f}; each session's cache is {per_session / 1024:.0f} KiB, so {total} resident would add "
              f"{(total - resident) * per_session / 1048576:.0f} MiB")
        if sanitized(args.server_binary):
            # ASan's quarantine holds freed memory back on purpose: RSS is
            # judged in optimized builds only (as tests/build_flavor.h does).
            print("a sanitizer build: RSS not judged")
        else:
            check(rss_all <= limit and rss_after <= limit, "RSS grew past the 64-conversation figure plus 10%")
    finally:
        stop_server(proc)


# ---- failover --------------------------------------------------------------

def start_redis(work):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def start_replica(args, shared, redis_port, grpc_port, http_port):
    proc, _, _ = start_server(args.server_binary, shared, listen=f"127.0.0.1:{grpc_port}",
                              extra=["--session-store", f"redis://127.0.0.1:{redis_port}",
                                     "--http-listen", f"127.0.0.1:{http_port}"])
    return proc


def start_haproxy(work, ports):
    cfg = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../deploy/haproxy/haproxy.cfg")
    env = dict(os.environ, SINKSERVE_GRPC_BIND=f"127.0.0.1:{ports['grpc']}",
               SINKSERVE_HTTP_BIND=f"127.0.0.1:{ports['http']}",
               SINKSERVE_A_GRPC=f"127.0.0.1:{ports['a_grpc']}", SINKSERVE_A_HTTP=f"127.0.0.1:{ports['a_http']}",
               SINKSERVE_B_GRPC=f"127.0.0.1:{ports['b_grpc']}", SINKSERVE_B_HTTP=f"127.0.0.1:{ports['b_http']}")
    subprocess.run(["haproxy", "-c", "-q", "-f", cfg], env=env, check=True)
    proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "haproxy.log"), "w"))
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", ports["grpc"]), timeout=0.2):
                time.sleep(1.2)  # both servers pass their first checks
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("haproxy did not start")


def failover_tokens(k):
    """The last turn runs long enough to be killed under."""
    return TOKENS if k < 3 else 1500


def retrying(client, sid, text, tokens=TOKENS, attempts=20):
    """A turn that a client retries after its replica died (reconnecting
    with the session id). Returns (opened, ids, seconds, failures)."""
    failures = 0
    while True:
        try:
            opened, ids, _, seconds = client.turn(sid, text, tokens=tokens)
            return opened, ids, seconds, failures
        except Exception:
            failures += 1
            if failures >= attempts:
                raise
            time.sleep(0.25)


def http_turn(port, sid, messages):
    body = json.dumps({"model": "", "messages": messages, "max_tokens": 20, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"content-type": "application/json", "x-session-id": sid})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.headers["x-session-id"], json.load(r)


def case_failover(grpc, msgs, args, shared, work):
    for binary in ("redis-server", "haproxy"):
        if shutil.which(binary) is None:
            skip(f"{binary} is not installed (scripts/setup.sh installs it)")
    n = 16
    ref = reference(grpc, msgs, args.server_binary, shared, n, 4, tokens=failover_tokens)
    ports = {k: free_port() for k in ("grpc", "http", "a_grpc", "a_http", "b_grpc", "b_http")}
    procs = []  # everything started, killed at the end whatever happens
    try:
        redis, redis_port = start_redis(work)
        procs.append(redis)
        a = start_replica(args, shared, redis_port, ports["a_grpc"], ports["a_http"])
        procs.append(a)
        b = start_replica(args, shared, redis_port, ports["b_grpc"], ports["b_http"])
        procs.append(b)
        procs.append(start_haproxy(work, ports))
        client = Client(grpc, msgs, f"127.0.0.1:{ports['grpc']}")
        sids = [""] * n
        before = [0.0] * n

        def turns01(c):
            for k in (0, 1):
                opened, ids, _, seconds = client.turn(sids[c], prompt(c, k))
                sids[c] = opened.session_id
                check(list(ids) == ref[c][k], f"conversation {c} turn {k} differs")
                before[c] = seconds

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            list(pool.map(turns01, range(n)))
        # An HTTP conversation that restates its whole history each turn (as
        # the openai client does), through the proxy.
        hsid, reply = http_turn(ports["http"], "new", [{"role": "user", "content": "Hello"}])
        history = [{"role": "user", "content": "Hello"},
                   {"role": "assistant", "content": reply["choices"][0]["message"]["content"]},
                   {"role": "user", "content": "And then?"}]
        _, reply = http_turn(ports["http"], hsid, history)
        history += [{"role": "assistant", "content": reply["choices"][0]["message"]["content"]},
                    {"role": "user", "content": "The end."}]

        # Between turns: replica a dies.
        kill9(a)
        moved, after = 0, {}

        def turn2(c):
            opened, ids, seconds, failures = retrying(client, sids[c], prompt(c, 2))
            check(list(ids) == ref[c][2], f"conversation {c}: turn 3 after the failover differs")
            if opened.restored == 1:
                after[c] = seconds
            return failures

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            failures = sum(pool.map(turn2, range(n)))
        moved = len(after)
        check(0 < moved < n, f"{moved} of {n} conversations moved: the hashing should have split them")
        _, reply = http_turn(ports["http"], hsid, history)  # may need the restored conversation hash
        check(reply["choices"][0]["message"]["content"] is not None, "the HTTP conversation did not continue")
        extra = [(after[c] - before[c]) * 1000 for c in after]
        print(f"failover between turns: {moved} of {n} conversations moved to the survivor and continued exactly "
              f"({failures} failed attempts retried); first turn after failover {statistics.median(after.values())*1000:.1f} "
              f"ms median vs {statistics.median(before[c] for c in after)*1000:.1f} ms for the same conversations' "
              f"turn before (extra {statistics.median(extra):.1f} ms median, {max(extra):.1f} max)")

        # While turns run: a comes back, takes its share again, and dies
        # again under running turns.
        a = start_replica(args, shared, redis_port, ports["a_grpc"], ports["a_http"])
        procs.append(a)
        time.sleep(1.5)  # two good checks
        results = {}

        def turn3(c):
            results[c] = retrying(client, sids[c], prompt(c, 3), tokens=failover_tokens(3))

        threads = [threading.Thread(target=turn3, args=(c,)) for c in range(n)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        kill9(a)
        for t in threads:
            t.join()
        broken = 0
        for c in range(n):
            opened, ids, _, failures = results[c]
            broken += failures > 0
            check(list(ids) == ref[c][3], f"conversation {c}: turn 4, retried after the kill, differs")
        check(broken > 0, "no turn was running on the killed replica")
        print(f"failover during turns: {broken} running turns broke with the replica, were retried on the survivor, "
              f"and all {n} conversations continued exactly; zero lost")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main():
    args, shared = test_args(lambda ap: ap.add_argument("--case", required=True,
                                                          choices=["restart", "memory", "failover"]))
    grpc = import_grpc()
    with tempfile.TemporaryDirectory() as work:
        msgs, _ = load_messages(args.proto_dir, work)
        {"restart": case_restart, "memory": case_memory, "failover": case_failover}[args.case](
            grpc, msgs, args, shared, work)
    print("OK")


if __name__ == "__main__":
    main()
