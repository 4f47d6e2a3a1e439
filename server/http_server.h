// The HTTP/1.1 front door, in the same process as the gRPC one and feeding
// the same engine: the OpenAI-compatible API (server/openai.h) with
// Server-Sent Events, the session extension, GET/DELETE of sessions, the web
// chat page at /, Prometheus metrics at /metrics and /health.
//
// Boost.Beast on one asio thread: every connection is a chain of
// asynchronous operations, and a streaming response is fed by the engine
// through its Outbox, whose hook only posts to that thread, so no thread is
// held per connection and no reaction blocks. A client that disconnects
// cancels its turn (its session is detached, as on gRPC).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "server/api_keys.h"
#include "server/metrics.h"

namespace sinkserve {

struct HttpServerOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks a free one
  int64_t max_body_bytes = 8 << 20;        // 413 above
  int64_t max_header_bytes = 16 << 10;     // 431 above
  int64_t max_connections = 1024;          // 503 (and close) above
  double idle_seconds = 60;                // keep-alive idle, and the time to send a request
  bool metrics_public = false;             // /metrics without an API key
  // PEM files: both set serves HTTPS instead of plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
};

class HttpServer {
 public:
  // `engine` (and `keys`, `metrics` when set) must outlive the server.
  // UNAVAILABLE when it cannot listen.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(Engine* engine, const ApiKeys* keys, Metrics* metrics,
                                                           const HttpServerOptions& options);
  ~HttpServer();  // closes every connection (their sessions detach) and joins

  int port() const;
  const std::string& address() const;
  // New requests get 503; responses in progress go on.
  void BeginDrain();

  class Impl;

 private:
  explicit HttpServer(std::shared_ptr<Impl> impl);
  // Shared with the engine's answers to session queries in flight, which
  // hold it weakly: one arriving after the server is gone is dropped.
  std::shared_ptr<Impl> impl_;
};

}  // namespace sinkserve
