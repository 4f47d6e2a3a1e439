#!/usr/bin/python3
"""TLS and API keys on both front doors of a real sinkserve-server process.

A throwaway self-signed certificate (openssl CLI) and a key file; the server
runs with --tls-cert/--tls-key/--api-key-file. Checks, over HTTPS: /health
open, the API 401 without a key and 200 with one, a streamed completion, and
plain HTTP refused; over gRPC with TLS: UNAUTHENTICATED without the key's
metadata, GetServerInfo and a Chat turn with it, and a session opened with
one key PERMISSION_DENIED to another; plaintext gRPC refused. Exit 77 = skipped.
"""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_harness import import_grpc, test_args, load_messages, skip, start_server, stop_server  # noqa: E402

KEY1 = "first-test-key-0123456789abcdef"
KEY2 = "second-test-key-0123456789abcdef"


def main():
    args, shared = test_args()
    grpc = import_grpc()
    if shutil.which("openssl") is None:
        skip("the openssl command is not installed")
    with tempfile.TemporaryDirectory() as work:
        cert, key = os.path.join(work, "tls.crt"), os.path.join(work, "tls.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
        keys = os.path.join(work, "keys.txt")
        with open(keys, "w") as f:
            f.write(f"# two keys\n{KEY1}\n{KEY2}\n")
        msgs, _ = load_messages(args.proto_dir, work)
        proc, port, line = start_server(args.server_binary, shared,
                                        extra=["--tls-cert", cert, "--tls-key", key, "--api-key-file", keys])
        try:
            http_port = int(line.split(" http=")[1].split()[0].rsplit(":", 1)[1])
            check_https(http_port, cert)
            check_grpc(grpc, msgs, port, cert)
        finally:
            stop_server(proc)
    print("OK")


def call(url, cert, key=None, body=None):
    ctx = ssl.create_default_context(cafile=cert)
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def check_https(port, cert):
    base = f"https://127.0.0.1:{port}"
    assert call(f"{base}/health", cert)[0] == 200
    status, body, _ = call(f"{base}/v1/models", cert)
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error", (status, body)
    assert call(f"{base}/v1/models", cert, key="not-a-key-0123456789abcdef")[0] == 401
    status, body, _ = call(f"{base}/v1/models", cert, key=KEY1)
    assert status == 200 and json.loads(body)["data"][0]["id"] == "stories260K", body
    status, body, headers = call(f"{base}/v1/chat/completions", cert, key=KEY1,
                                 body={"messages": [{"role": "user", "content": "Once"}], "max_tokens": 6,
                                       "ignore_eos": True, "stream": True})
    assert status == 200 and headers.get("Content-Type") == "text/event-stream", (status, headers)
    assert body.rstrip().endswith("data: [DONE]"), body
    # Plain HTTP on the TLS port gets no answer.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
        raise AssertionError("plain HTTP was answered on the TLS port")
    except (urllib.error.URLError, ConnectionError, OSError):
        pass
    print("https: ok")


def check_grpc(grpc, msgs, port, cert):
    with open(cert, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    channel = grpc.secure_channel(f"127.0.0.1:{port}", creds)
    grpc.channel_ready_future(channel).result(timeout=10)
    info = channel.unary_unary("/sinkserve.v1.ChatService/GetServerInfo",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=msgs["ServerInfo"].FromString)
    get_session = channel.unary_unary("/sinkserve.v1.ChatService/GetSession",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=msgs["SessionInfo"].FromString)
    try:
        info(msgs["GetServerInfoRequest"](), timeout=10)
        raise AssertionError("GetServerInfo answered without a key")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    auth1 = [("authorization", f"Bearer {KEY1}")]
    auth2 = [("authorization", f"Bearer {KEY2}")]
    assert info(msgs["GetServerInfoRequest"](), timeout=10, metadata=auth1).model == "stories260K"

    chat = channel.stream_stream("/sinkserve.v1.ChatService/Chat",
                                 request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=msgs["ChatResponse"].FromString)
    ChatRequest = msgs["ChatRequest"]
    open_req = ChatRequest()
    open_req.open.session_id = ""
    turn = ChatRequest()
    turn.turn.text = "Once upon a time"
    turn.turn.raw = True
    turn.turn.max_new_tokens = 5
    turn.turn.ignore_eos = True
    try:
        list(chat(iter([open_req, turn]), timeout=10))
        raise AssertionError("Chat answered without a key")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    responses = list(chat(iter([open_req, turn]), timeout=30, metadata=auth1))
    kinds = [r.WhichOneof("kind") for r in responses]
    assert kinds[0] == "opened" and kinds[-1] == "done", kinds
    session_id = responses[0].opened.session_id
    request = msgs["GetSessionRequest"](session_id=session_id)
    assert get_session(request, timeout=10, metadata=auth1).session_id == session_id
    try:
        get_session(request, timeout=10, metadata=auth2)
        raise AssertionError("another key saw the session")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e
    assert get_session(request, timeout=10, metadata=auth1).session_id == session_id  # unharmed
    # Plaintext gRPC to the TLS port does not connect.
    plain = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(plain).result(timeout=3)
        info(msgs["GetServerInfoRequest"](), timeout=3, metadata=auth1)
        raise AssertionError("plaintext gRPC was answered on the TLS port")
    except (grpc.FutureTimeoutError, grpc.RpcError):
        pass
    print("grpc: ok")


if __name__ == "__main__":
    main()
