// A running gRPC server around an Engine: the ChatService, grpc.health.v1
// (SERVING once started, NOT_SERVING while draining) and server reflection.
// Used by sinkserve-server's main and, in-process, by the server tests.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/chat_service.h"

namespace sinkserve {

struct ChatServerOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one
  int64_t max_message_bytes = 4 << 20;     // per gRPC message, both directions
  // Connections: HTTP/2 keepalive pings after this much silence, and a
  // connection that does not answer one within keepalive_timeout is closed
  // (its streams end, their sessions detach).
  double keepalive_seconds = 30;
  double keepalive_timeout_seconds = 10;
  // A connection must finish its HTTP/2 handshake within this.
  double handshake_timeout_seconds = 10;
  // A connection with no stream this long is closed (clients reconnect).
  double connection_idle_seconds = 300;
  int64_t max_streams_per_connection = 100;
  const ApiKeys* keys = nullptr;  // see ChatServiceImpl
  Metrics* metrics = nullptr;
  // PEM files: both set serves TLS instead of plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
};

// The contents of a PEM file (a TLS certificate chain or key);
// INVALID_ARGUMENT naming the file when it is unreadable or not PEM.
absl::StatusOr<std::string> ReadPem(const std::string& path);

class ChatServer {
 public:
  // `engine` must outlive the server. UNAVAILABLE when it cannot listen.
  static absl::StatusOr<std::unique_ptr<ChatServer>> Start(Engine* engine, v1::ServerInfo info,
                                                           const ChatServerOptions& options);
  ~ChatServer();  // Drain(0) unless drained

  int port() const { return port_; }
  const std::string& address() const { return address_; }
  const ChatServiceImpl& service() const { return *service_; }

  // Graceful shutdown: health turns NOT_SERVING, new streams and turns get
  // UNAVAILABLE, running turns get up to `timeout` to finish; then every
  // stream still open ends with UNAVAILABLE and the server stops.
  void Drain(absl::Duration timeout);

 private:
  ChatServer() = default;
  Engine* engine_ = nullptr;
  std::unique_ptr<ChatServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  bool drained_ = false;
};

}  // namespace sinkserve
