#!/usr/bin/python3
"""Interop from another language: a Python client on Debian's python3-grpcio.

Message classes are built at test time from a `protoc --descriptor_set_out`
set of proto/sinkserve/v1/chat.proto (no generated Python is checked in). The
test starts sinkserve-server on a free port with stories260K, opens a session,
streams two raw turns and checks the usage figures. Exit 77 = skipped.
"""
import os
import queue
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_harness import import_grpc, test_args, load_messages, start_server, stop_server  # noqa: E402


def main():
    args, shared = test_args()
    grpc = import_grpc()
    with tempfile.TemporaryDirectory() as work:
        msgs, pool = load_messages(args.proto_dir, work)
        proc, port, _ = start_server(args.server_binary, shared)
        try:
            run(grpc, msgs, pool, f"127.0.0.1:{port}")
        finally:
            stop_server(proc)
    print("OK")


def run(grpc, msgs, pool, address):
    ChatRequest, ChatResponse = msgs["ChatRequest"], msgs["ChatResponse"]
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    chat = channel.stream_stream("/sinkserve.v1.ChatService/Chat",
                                 request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=ChatResponse.FromString)
    get_session = channel.unary_unary("/sinkserve.v1.ChatService/GetSession",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=msgs["SessionInfo"].FromString)
    outgoing = queue.Queue()

    def requests():
        while True:
            r = outgoing.get()
            if r is None:
                return
            yield r

    open_req = ChatRequest()
    open_req.open.session_id = ""
    outgoing.put(open_req)
    responses = chat(requests(), timeout=60)
    first = next(responses)
    assert first.WhichOneof("kind") == "opened", first
    session_id = first.opened.session_id
    assert re.fullmatch(r"[0-9a-f]{32}", session_id), session_id
    assert first.opened.model == "stories260K", first.opened.model

    finish = pool.FindEnumTypeByName("sinkserve.v1.FinishReason").values_by_name
    expected_session = 0
    for n, (text, prompt_tokens) in enumerate([("Once upon a time", 5), (" The dog", None)], start=1):
        turn = ChatRequest()
        turn.turn.text = text
        turn.turn.raw = True
        turn.turn.max_new_tokens = 12
        turn.turn.ignore_eos = True
        turn.turn.sampling.temperature = 0.0
        outgoing.put(turn)
        ids, deltas = [], 0
        for r in responses:
            kind = r.WhichOneof("kind")
            if kind == "delta":
                deltas += 1
                assert r.delta.turn == n
                ids.extend(r.delta.token_ids)
            elif kind == "done":
                done = r.done
                break
        else:
            raise AssertionError("stream ended before done")
        u = done.usage
        assert done.turn == n, done
        assert done.reason == finish["FINISH_REASON_LENGTH"].number, done
        assert u.generated_tokens == 12 and len(ids) == 12, (u, ids)
        assert deltas >= 1
        if prompt_tokens is not None:
            assert u.prompt_tokens == prompt_tokens, u  # BOS + "Once upon a time"
        assert 0 < u.prompt_tokens < 10, u
        expected_session += u.prompt_tokens + u.generated_tokens
        assert u.session_tokens == expected_session, (u, expected_session)
        assert u.cache_tokens <= u.session_tokens
        print(f"turn {n}: prompt={u.prompt_tokens} generated={u.generated_tokens} session={u.session_tokens} "
              f"ttft_ms={u.time_to_first_token_ms:.2f}")
    info_req = msgs["GetSessionRequest"]()
    info_req.session_id = session_id
    info = get_session(info_req, timeout=10)
    assert info.position == expected_session and info.turns == 2, info
    outgoing.put(None)
    for _ in responses:
        pass


if __name__ == "__main__":
    main()
