// The gRPC service: one ChatReactor per Chat stream (gRPC's callback API),
// unary handlers that answer from the engine thread. No reaction blocks: each
// hands a command to the engine and returns; the engine answers through the
// stream's Outbox, whose notify hook only queues the stream on the WritePump.
#pragma once

#include <optional>

#include <atomic>
#include <string>
#include <string_view>

#include "engine/engine.h"
#include "server/api_keys.h"
#include "server/metrics.h"
#include "server/write_pump.h"
#include "sinkserve/v1/chat.grpc.pb.h"

namespace sinkserve {

// Chat is a raw method (bytes in, bytes out): the reactor parses each request
// itself, so a body that is not a ChatRequest (or a string field that is not
// UTF-8) ends the stream with INVALID_ARGUMENT instead of looking like a
// half-close.
using ChatServiceBase = v1::ChatService::WithRawCallbackMethod_Chat<v1::ChatService::WithCallbackMethod_GetSession<
    v1::ChatService::WithCallbackMethod_DeleteSession<v1::ChatService::WithCallbackMethod_GetServerInfo<
        v1::ChatService::Service>>>>;

// The identity a connection's sessions count against when no API key names
// one: the peer's address without its port ("ipv4:10.0.0.7"), so that one
// host's connections share a quota.
std::string PeerIdentity(std::string_view peer);

class ChatServiceImpl final : public ChatServiceBase {
 public:
  // `engine` must outlive the service. `info` is what GetServerInfo returns
  // (active_sessions is filled per call).
  // With `keys` enabled every call needs `authorization: Bearer KEY`
  // metadata (else UNAUTHENTICATED), and a key's sessions are its own.
  // `metrics` (optional) gets the Chat streams' turns.
  ChatServiceImpl(Engine* engine, v1::ServerInfo info, const ApiKeys* keys = nullptr, Metrics* metrics = nullptr)
      : engine_(engine), info_(std::move(info)), keys_(keys), metrics_(metrics) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Chat(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context, const v1::GetSessionRequest* request,
                                       v1::SessionInfo* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* context,
                                          const v1::DeleteSessionRequest* request,
                                          v1::DeleteSessionResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request, v1::ServerInfo* response) override;

  // Streams alive now (for tests and the drain).
  int64_t open_streams() const { return open_streams_.load(); }

 private:
  friend class ChatReactor;
  // The caller's identity: its API key's ("key#N") when keys are on (nullopt
  // for a missing or unknown key), else the peer's address.
  std::optional<std::string> Identify(grpc::CallbackServerContext* context) const;

  Engine* engine_;
  const v1::ServerInfo info_;
  const ApiKeys* keys_;
  Metrics* metrics_;
  std::atomic<int64_t> open_streams_{0};
  WritePump pump_;  // starts the writes the engine's events call for
};

}  // namespace sinkserve
