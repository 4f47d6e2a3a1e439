// The gRPC service: one ChatReactor per Chat stream (gRPC's callback API),
// unary handlers that answer from the engine thread. No reaction blocks: each
// hands a command to the engine and returns; the engine answers through the
// stream's Outbox, whose notify hook only queues the stream on the WritePump.
#pragma once

#include <atomic>

#include "engine/engine.h"
#include "server/write_pump.h"
#include "sinkserve/v1/chat.grpc.pb.h"

namespace sinkserve {

class ChatServiceImpl final : public v1::ChatService::CallbackService {
 public:
  // `engine` must outlive the service. `info` is what GetServerInfo returns
  // (active_sessions is filled per call).
  ChatServiceImpl(Engine* engine, v1::ServerInfo info) : engine_(engine), info_(std::move(info)) {}

  grpc::ServerBidiReactor<v1::ChatRequest, v1::ChatResponse>* Chat(grpc::CallbackServerContext* context) override;
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
  Engine* engine_;
  const v1::ServerInfo info_;
  std::atomic<int64_t> open_streams_{0};
  WritePump pump_;  // starts the writes the engine's events call for
};

}  // namespace sinkserve
