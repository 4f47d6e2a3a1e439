"""What the Python server tests share: message classes built from the proto at
test time (no generated Python is checked in), a sinkserve-server child
process on a free port, and a raw-bytes view of the Chat method.

Debian's python3-grpcio and python3-protobuf live in /usr/bin/python3; a
missing piece makes the test exit 77 (skipped), with a message.
"""
import os
import queue
import re
import shutil
import subprocess
import sys

SKIP = 77
CHAT = "/sinkserve.v1.ChatService/Chat"


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(SKIP)


def test_args(extra=lambda ap: None):
    """The command line every Python server test takes (--server-binary,
    --proto-dir, --shared-dir; `extra` may add more), and the shared-data
    folder ($SINKSERVE_SHARED_DIR wins over --shared-dir)."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-binary", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--shared-dir", required=True)
    extra(ap)
    args = ap.parse_args()
    return args, os.environ.get("SINKSERVE_SHARED_DIR") or args.shared_dir


def import_grpc():
    try:
        import grpc
        from google.protobuf import descriptor_pool  # noqa: F401
    except ImportError as e:
        skip(f"python grpc/protobuf missing ({e}); apt-get install python3-grpcio python3-protobuf")
    return grpc


def load_messages(proto_dir, workdir):
    """Every message class of sinkserve/v1/chat.proto by short name, and the pool."""
    protoc = shutil.which("protoc")
    if protoc is None:
        skip("protoc is not installed (apt-get install protobuf-compiler)")
    desc = os.path.join(workdir, "chat.desc")
    subprocess.run([protoc, f"--proto_path={proto_dir}", "--include_imports", f"--descriptor_set_out={desc}",
                    "sinkserve/v1/chat.proto"], check=True)
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    fds = descriptor_pb2.FileDescriptorSet()
    with open(desc, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    classes = {}
    for fd in fds.file:
        for m in fd.message_type:
            d = pool.FindMessageTypeByName(f"{fd.package}.{m.name}")
            if hasattr(message_factory, "GetMessageClass"):
                classes[m.name] = message_factory.GetMessageClass(d)
            else:
                classes[m.name] = message_factory.MessageFactory(pool).GetPrototype(d)
    return classes, pool


def stories_args(shared):
    model = os.path.join(shared, "models/stories260K/stories260K.bin")
    vocab = os.path.join(shared, "models/stories260K/tok512.bin")
    if not os.path.exists(model):
        skip(f"shared test data missing: {model} (set SINKSERVE_SHARED_DIR)")
    return ["--model", model, "--tokenizer", vocab, "--backend", "cpu", "--threads", "1"]


def start_server(binary, shared, extra=(), listen="127.0.0.1:0", prefix=()):
    """Starts sinkserve-server (after `prefix`, e.g. prlimit); returns the
    process, its port and its startup line."""
    # The HTTP front door on a free port too, so servers in parallel tests do
    # not meet on its default 8080.
    http = [] if "--http-listen" in extra else ["--http-listen", "127.0.0.1:0"]
    proc = subprocess.Popen(list(prefix) + [binary] + stories_args(shared) + ["--listen", listen] + http + list(extra),
                            stderr=subprocess.PIPE, text=True)
    # The serving line (a session store prints its own line first).
    line, m = "", None
    for _ in range(8):
        line = proc.stderr.readline()
        m = re.search(r"listen=\S*:(\d+)", line)
        if m or not line:
            break
    if not m:
        proc.kill()
        raise RuntimeError(f"no startup line from the server: {line!r}")
    return proc, int(m.group(1)), line


def stop_server(proc, timeout=30):
    proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


class Stream:
    """One Chat stream fed from a queue: put() requests, iterate responses."""

    def __init__(self, channel, msgs, timeout=60, raw=False):
        self.outgoing = queue.Queue()
        call = channel.stream_stream(
            CHAT, request_serializer=None if raw else (lambda m: m.SerializeToString()),
            response_deserializer=msgs["ChatResponse"].FromString)
        self.responses = call(self._requests(), timeout=timeout)

    def _requests(self):
        while True:
            r = self.outgoing.get()
            if r is None:
                return
            yield r

    def put(self, request):
        self.outgoing.put(request)

    def close(self):
        self.outgoing.put(None)

    def next(self):
        return next(self.responses)

    def drain(self):
        """Reads to the end; returns (responses, grpc code, details)."""
        import grpc
        got = []
        try:
            for r in self.responses:
                got.append(r)
        except grpc.RpcError as e:
            return got, e.code(), e.details()
        return got, grpc.StatusCode.OK, ""
