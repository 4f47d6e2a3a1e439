#include "server/http_server.h"

#include <array>
#include <chrono>
#include <deque>
#include <optional>
#include <unordered_set>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/status_macros.h"
#include "server/openai.h"

namespace sinkserve {

// The web chat page (server/web/index.html), compiled in by CMake.
extern const char kWebIndexHtml[];

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Request = http::request<http::string_body>;

// Deltas queued while a chunk is being written are merged, up to this many ids.
constexpr size_t kMaxTokensPerChunk = 64;
// Chunks a connection holds unwritten before it stops taking events from
// its outbox: then the outbox fills and the engine pauses the session (and
// ends it once the client has read nothing for --stalled-stream-timeout).
constexpr size_t kMaxQueuedChunks = 16;

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// "host:port" (a [v6] host in brackets) into its parts.
absl::StatusOr<tcp::endpoint> ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http-listen must be host:port, not '", listen, "'"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  const net::ip::address address = net::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--http-listen: '", host, "' is not an IP address"));
  return tcp::endpoint(address, static_cast<unsigned short>(port));
}

}  // namespace

// What the server holds of a connection, whatever its transport.
class ConnectionBase {
 public:
  virtual ~ConnectionBase() = default;
  // The server is stopping: drop the turn (its session detaches) and close.
  virtual void Abort() = 0;
};

class HttpServer::Impl : public std::enable_shared_from_this<HttpServer::Impl> {
 public:
  Impl(Engine* engine, const ApiKeys* keys, Metrics* metrics, const HttpServerOptions& options)
      : engine_(engine), keys_(keys), metrics_(metrics), options_(options), acceptor_(ioc_) {}
  ~Impl() { Stop(); }

  absl::Status Listen() {
    ASSIGN_OR_RETURN(tcp::endpoint endpoint, ParseListen(options_.listen));
    if (!options_.tls_cert_file.empty()) {
      tls_.emplace(net::ssl::context::tls_server);
      tls_->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                        net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1);
      boost::system::error_code ec;
      tls_->use_certificate_chain_file(options_.tls_cert_file, ec);
      if (ec) return absl::InvalidArgumentError(absl::StrCat(options_.tls_cert_file, ": ", ec.message()));
      tls_->use_private_key_file(options_.tls_key_file, net::ssl::context::pem, ec);
      if (ec) return absl::InvalidArgumentError(absl::StrCat(options_.tls_key_file, ": ", ec.message()));
    }
    boost::system::error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen, ": ", ec.message()));
    port_ = acceptor_.local_endpoint().port();
    address_ = absl::StrCat(endpoint.address().is_v6() ? "[" + endpoint.address().to_string() + "]"
                                                        : endpoint.address().to_string(),
                            ":", port_);
    Accept();
    thread_ = std::thread([this] { ioc_.run(); });
    return absl::OkStatus();
  }

  void Stop();
  void Accept();

  Engine* engine_;
  const ApiKeys* keys_;
  Metrics* metrics_;
  const HttpServerOptions options_;
  // Touched on the io thread only (and declared before ioc_, so they outlive
  // the handlers ioc_ destroys).
  std::unordered_set<ConnectionBase*> connections_;
  net::io_context ioc_{1};
  std::optional<net::ssl::context> tls_;  // set when serving HTTPS
  tcp::acceptor acceptor_;
  std::thread thread_;
  int port_ = 0;
  std::string address_;
  std::atomic<bool> draining_{false};
};

// One HTTP/1.1 connection over `Stream` (beast::tcp_stream, or a TLS
// stream over one): requests in turn (keep-alive), each answered in full
// before the next is read. A completion is fed by the engine through
// `outbox_`; its hook posts Pump() to the io thread.
template <class Stream>
class Connection final : public ConnectionBase, public std::enable_shared_from_this<Connection<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  template <class... Args>
  Connection(HttpServer::Impl* server, Args&&... args) : server_(server), stream_(std::forward<Args>(args)...) {
    boost::system::error_code ec;
    const tcp::endpoint peer = Socket().remote_endpoint(ec);
    peer_ = ec ? "unknown" : peer.address().to_string();
  }

  void Start() {
    server_->connections_.insert(this);
    if constexpr (kTls) {
      Tcp().expires_after(IdleTimeout());
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this(), this](beast::error_code ec) {
                                if (ec) return Close();  // not TLS, or a failed handshake: nothing to answer
                                ReadRequest();
                              });
    } else {
      ReadRequest();
    }
  }

  void Abort() override {
    const std::shared_ptr<Connection> keep = std::move(self_);  // a session query's hold, if any: gone after this
    EndTurnEarly();
    boost::system::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_both, ec);
    Socket().close(ec);
  }

  ~Connection() override { server_->connections_.erase(this); }

 private:
  struct Out {
    enum Kind { kHeader, kChunk, kLast } kind;
    std::string data;
  };

  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }
  tcp::socket& Socket() { return Tcp().socket(); }
  std::chrono::milliseconds IdleTimeout() const {
    return std::chrono::milliseconds(static_cast<int64_t>(server_->options_.idle_seconds * 1000));
  }

  void ReadRequest() {
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(server_->options_.max_body_bytes));
    parser_->header_limit(static_cast<uint32_t>(server_->options_.max_header_bytes));
    Tcp().expires_after(IdleTimeout());
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Connection::OnRead, this->shared_from_this()));
  }

  void OnRead(beast::error_code ec, size_t) {
    if (ec == http::error::body_limit) {
      linger_ = true;  // the client may still be sending: let it finish, so it can read the answer
      return SendError(413, absl::StrCat("the body is over ", server_->options_.max_body_bytes, " bytes"), false);
    }
    if (ec == http::error::header_limit) {
      return SendError(431, "the request's headers are too large", false);
    }
    if (ec) {
      // end_of_stream, a timeout, a malformed request: nothing to answer.
      if (ec != http::error::end_of_stream && ec != beast::error::timeout && ec != net::error::operation_aborted) {
        return SendError(400, absl::StrCat("malformed HTTP request: ", ec.message()), false);
      }
      return Close();
    }
    Tcp().expires_never();
    request_ = parser_->release();
    keep_alive_ = request_.keep_alive();
    Route();
  }

  void Route() {
    const std::string_view target(request_.target().data(), request_.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    const http::verb method = request_.method();
    const bool open_route = path == "/" || path == "/health" || (path == "/metrics" && server_->options_.metrics_public);
    client_ = peer_;
    if (server_->keys_ != nullptr && server_->keys_->enabled() && !open_route) {
      const auto auth = request_.find(http::field::authorization);
      std::optional<std::string> identity;
      if (auth != request_.end()) identity = server_->keys_->Identify(std::string_view(auth->value().data(), auth->value().size()));
      if (!identity) return SendError(401, "a valid API key is required: Authorization: Bearer KEY");
      client_ = *identity;
    }
    if (path == "/" && method == http::verb::get) return SendBody(200, "text/html; charset=utf-8", kWebIndexHtml);
    if (path == "/health" && method == http::verb::get) {
      if (server_->draining_.load()) return SendBody(503, "application/json", R"({"status":"draining"})");
      return SendBody(200, "application/json", R"({"status":"ok"})");
    }
    if (path == "/metrics" && method == http::verb::get) {
      if (server_->metrics_ == nullptr) return SendError(404, "metrics are off");
      return SendBody(200, "text/plain; version=0.0.4; charset=utf-8", server_->metrics_->Serialize());
    }
    if (path == "/v1/models" && method == http::verb::get) {
      return SendBody(200, "application/json", openai::ModelsResponse(server_->engine_->model_name(), created_));
    }
    if (path == "/v1/chat/completions" || path == "/v1/completions") {
      if (method != http::verb::post) return SendError(405, "use POST");
      return StartCompletion(path == "/v1/chat/completions");
    }
    if (path.starts_with("/v1/sessions/")) {
      const std::string id(path.substr(std::string_view("/v1/sessions/").size()));
      if (method == http::verb::get) return GetSession(id);
      if (method == http::verb::delete_) return DeleteSession(id);
      return SendError(405, "use GET or DELETE");
    }
    return SendError(404, absl::StrCat("no such endpoint: ", std::string(path.substr(0, 200))));
  }

  // ---- Sessions ----------------------------------------------------------

  // The engine answers on its thread; the answer is handed to the io thread
  // (unless the server is gone by then). The connection holds itself until
  // the answer arrives: the engine's closure holds it only weakly, so the
  // connection is never destroyed on the engine thread.
  template <typename T>
  std::function<void(T)> OnIoThread(std::function<void(Connection&, T)> answer) {
    self_ = this->shared_from_this();
    return [server = server_->weak_from_this(), weak = this->weak_from_this(), answer](T value) {
      if (auto s = server.lock()) {
        net::post(s->ioc_, [weak, answer, value = std::move(value)]() mutable {
          if (auto self = weak.lock()) {
            const std::shared_ptr<Connection> keep = std::move(self->self_);
            answer(*self, std::move(value));
          }
        });
      }
    };
  }

  void GetSession(const std::string& id) {
    server_->engine_->GetSession(id, client_,
                                 OnIoThread<absl::StatusOr<SessionSnapshot>>([](Connection& c, auto s) {
                                   if (!s.ok()) return c.SendStatus(s.status());
                                   c.SendBody(200, "application/json", openai::SessionResponse(*s));
                                 }));
  }

  void DeleteSession(const std::string& id) {
    server_->engine_->DeleteSession(id, client_, OnIoThread<absl::Status>([](Connection& c, absl::Status status) {
                                      if (!status.ok()) return c.SendStatus(status);
                                      c.SendBody(200, "application/json", R"({"deleted":true})");
                                    }));
  }

  // ---- Completions --------------------------------------------------------

  void StartCompletion(bool chat) {
    if (server_->draining_.load()) return SendError(503, "the server is shutting down; retry on another replica");
    const auto header = request_.find("x-session-id");
    const std::string session_header =
        header == request_.end() ? "" : std::string(header->value().data(), header->value().size());
    absl::StatusOr<openai::CompletionRequest> parsed = openai::ParseCompletionRequest(request_.body(), session_header, chat);
    if (!parsed.ok()) return SendStatus(parsed.status());
    req_ = *std::move(parsed);
    if (!req_.model.empty() && req_.model != server_->engine_->model_name()) {
      return SendError(404, absl::StrCat("the model '", req_.model.substr(0, 200), "' does not exist; this server serves '",
                                         server_->engine_->model_name(), "' (GET /v1/models)"));
    }
    if (req_.mode == openai::SessionMode::kResume) {
      // Earlier messages restated by the client must be the conversation the
      // session holds (the engine keeps its hash, also in the session store):
      // else the turn ends with FAILED_PRECONDITION, a 409.
      if (!req_.earlier.empty()) {
        openai::ConversationHash stated;
        for (const HistoryMessage& m : req_.earlier) stated.Add(m.assistant, m.text);
        req_.turn.expect_conversation = stated;
      }
      req_.open.session_id = req_.session_id;
      req_.earlier.clear();  // in the cache already
    } else {
      req_.turn.history = std::move(req_.earlier);
    }
    req_.open.client = client_;
    req_.open.ephemeral = req_.mode == openai::SessionMode::kStateless;

    ctx_ = openai::ResponseContext();
    ctx_.chat = chat;
    ctx_.id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", NewSessionId().substr(0, 24));
    ctx_.created = UnixSeconds();
    ctx_.model = server_->engine_->model_name();
    ctx_.return_token_ids = req_.return_token_ids;
    text_.clear();
    ids_.clear();
    done_.reset();
    headers_sent_ = false;
    turn_active_ = true;
    // Nothing else may hold the connection while it waits for the engine.
    self_ = this->shared_from_this();
    first_delta_ = true;
    if (server_->metrics_ != nullptr) metric_.emplace(server_->metrics_, "http");

    Engine& engine = *server_->engine_;
    outbox_ = engine.NewOutbox();
    std::weak_ptr<Connection> weak = this->weak_from_this();
    net::io_context& ioc = server_->ioc_;
    outbox_->SetNotify([weak, &ioc] {
      net::post(ioc, [weak] {
        if (auto self = weak.lock()) self->Pump();
      });
    });
    engine.Open(outbox_, req_.open);
    engine.StartTurn(outbox_, std::move(req_.turn));
    engine.HalfClose(outbox_);
    WatchPeer();
  }

  // A client that closes its connection mid-turn cancels the turn.
  void WatchPeer() {
    Socket().async_wait(tcp::socket::wait_read, [self = this->shared_from_this(), this](beast::error_code ec) {
      if (ec || !turn_active_) return;
      boost::system::error_code e;
      // (Under TLS a pipelined request or a close_notify also reads as data;
      // a bare close still reads as none.)
      if (Socket().available(e) == 0 || e) {
        EndTurnEarly();
        Close();
      }
      // Otherwise a pipelined request waits in the socket; it is read after
      // this response.
    });
  }

  void Pump() {
    while (turn_active_ && outbox_ != nullptr && out_.size() < kMaxQueuedChunks) {
      std::optional<ChatEvent> event = outbox_->PopMerged(kMaxTokensPerChunk);
      if (!event) break;
      if (auto* opened = std::get_if<OpenedEvent>(&*event)) {
        ctx_.cache = opened->cache;
        if (req_.mode != openai::SessionMode::kStateless) ctx_.session_id = opened->session_id;
        session_id_ = opened->session_id;
      } else if (auto* delta = std::get_if<DeltaEvent>(&*event)) {
        if (metric_) metric_->Delta(static_cast<int64_t>(delta->token_ids.size()));
        if (delta->text.empty() && !(req_.return_token_ids && !delta->token_ids.empty())) continue;
        if (req_.stream) {
          SendHeadersOnce();
          Queue(Out::kChunk, openai::DeltaChunk(ctx_, delta->text, delta->token_ids, first_delta_));
          first_delta_ = false;
        } else {
          text_ += delta->text;
          if (req_.return_token_ids) ids_.insert(ids_.end(), delta->token_ids.begin(), delta->token_ids.end());
        }
      } else if (auto* done = std::get_if<DoneEvent>(&*event)) {
        if (metric_) metric_->Done(*done);
        done_ = *done;
      } else if (auto* end = std::get_if<EndEvent>(&*event)) {
        FinishTurn(end->status);
        return;
      }
    }
  }

  void SendHeadersOnce() {
    if (headers_sent_) return;
    headers_sent_ = true;
    sse_header_ = {};
    sse_header_.result(http::status::ok);
    sse_header_.version(11);
    sse_header_.set(http::field::content_type, "text/event-stream");
    sse_header_.set(http::field::cache_control, "no-cache");
    if (!ctx_.session_id.empty()) sse_header_.set("x-session-id", ctx_.session_id);
    sse_header_.keep_alive(keep_alive_);
    sse_header_.chunked(true);
    Queue(Out::kHeader, "");
  }

  // The engine ended the stream: the response's last bytes, then the next
  // request (or close).
  void FinishTurn(const absl::Status& status) {
    const bool ok = status.ok() && done_.has_value();
    const std::shared_ptr<Connection> keep =  // until this returns
        LeaveTurn(/*detach=*/false);
    const bool failed_before_output = !headers_sent_ && text_.empty() &&
                                      (!ok || (done_->reason == FinishReason::kError && done_->usage.generated_tokens == 0));
    if (failed_before_output) {
      if (!status.ok()) return SendStatus(status);
      return SendError(400, done_->error);
    }
    if (!req_.stream) {
      std::string body = openai::CompletionResponse(ctx_, text_, ids_, *done_);
      http::response<http::string_body> res{http::status::ok, 11};
      res.set(http::field::content_type, "application/json");
      if (!ctx_.session_id.empty()) res.set("x-session-id", ctx_.session_id);
      res.body() = std::move(body);
      return SendResponse(std::move(res));
    }
    SendHeadersOnce();
    if (!ok) {
      Queue(Out::kChunk, openai::ErrorChunk(status.ok() ? std::string("the turn ended without an answer")
                                                     : std::string(status.message())));
    } else {
      Queue(Out::kChunk, openai::FinishChunk(ctx_, *done_));
      if (req_.include_usage) Queue(Out::kChunk, openai::UsageChunk(ctx_, *done_));
    }
    Queue(Out::kChunk, std::string(openai::kDoneEvent));
    Queue(Out::kLast, "");
  }

  // The turn ends before the engine ended it (client gone, server stopping).
  void EndTurnEarly() {
    if (!turn_active_) return;
    if (metric_) {
      DoneEvent cancelled;
      cancelled.reason = FinishReason::kCancelled;
      metric_->Done(cancelled);
    }
    const std::shared_ptr<Connection> keep = LeaveTurn(/*detach=*/true);  // until this returns
  }

  // What every end of a turn does: stop hearing from the engine (detaching
  // the session when the engine did not end the stream itself), delete a
  // stateless session. Returns the connection's hold on itself, which the
  // caller drops when done with `this`.
  std::shared_ptr<Connection> LeaveTurn(bool detach) {
    turn_active_ = false;
    outbox_->ClearNotify();
    if (detach) server_->engine_->Detach(outbox_);
    outbox_.reset();
    metric_.reset();
    if (req_.mode == openai::SessionMode::kStateless && !session_id_.empty()) {
      server_->engine_->DeleteSession(session_id_, [](absl::Status) {});
    }
    return std::move(self_);
  }

  // ---- Writing -------------------------------------------------------------

  void Queue(typename Out::Kind kind, std::string data) {
    out_.push_back({kind, std::move(data)});
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    if (out_.empty()) return;
    writing_ = true;
    Out& front = out_.front();
    auto done = beast::bind_front_handler(&Connection::OnStreamWritten, this->shared_from_this());
    switch (front.kind) {
      case Out::kHeader:
        sse_serializer_.emplace(sse_header_);
        http::async_write_header(stream_, *sse_serializer_, std::move(done));
        break;
      case Out::kChunk: net::async_write(stream_, http::make_chunk(net::buffer(front.data)), std::move(done)); break;
      case Out::kLast: net::async_write(stream_, http::make_chunk_last(), std::move(done)); break;
    }
  }

  void OnStreamWritten(beast::error_code ec, size_t) {
    writing_ = false;
    if (ec) {  // the client is gone
      EndTurnEarly();
      out_.clear();
      return Close();
    }
    const bool last = out_.front().kind == Out::kLast;
    out_.pop_front();
    if (last) return AfterResponse();
    Pump();  // room again for what the outbox holds
    if (!writing_) WriteNext();
  }

  void SendStatus(const absl::Status& status) {
    const int code = openai::HttpStatusFor(status);
    SendError(code, std::string(status.message()));
  }

  void SendError(int code, const std::string& message, bool keep_alive = true) {
    if (!keep_alive) keep_alive_ = false;
    SendBody(code, "application/json", openai::ErrorBody(message, openai::ErrorTypeFor(code), code));
  }

  void SendBody(int code, const char* content_type, std::string body) {
    http::response<http::string_body> res{static_cast<http::status>(code), 11};
    res.set(http::field::content_type, content_type);
    res.body() = std::move(body);
    SendResponse(std::move(res));
  }

  void SendResponse(http::response<http::string_body> res) {
    res.keep_alive(keep_alive_);
    res.prepare_payload();
    auto shared = std::make_shared<http::response<http::string_body>>(std::move(res));
    http::async_write(stream_, *shared, [self = this->shared_from_this(), this, shared](beast::error_code ec, size_t) {
      if (ec) return Close();
      AfterResponse();
    });
  }

  void AfterResponse() {
    if (linger_) return Linger();
    if (!keep_alive_) return Close();
    ReadRequest();
  }

  // A lingering close: stop sending, then read and drop what the client
  // still sends (at most the body limit, for at most kLingerSeconds) before
  // closing, so that a client that has not finished sending a refused body
  // reads the refusal instead of a reset connection.
  void Linger() {
    static constexpr int kLingerSeconds = 5;
    boost::system::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_send, ec);
    Tcp().expires_after(std::chrono::seconds(kLingerSeconds));
    linger_budget_ = server_->options_.max_body_bytes;
    Drop();
  }

  void Drop() {
    Tcp().async_read_some(net::buffer(drop_buffer_), [self = this->shared_from_this(), this](beast::error_code ec,
                                                                                               size_t n) {
      linger_budget_ -= static_cast<int64_t>(n);
      if (ec || linger_budget_ <= 0) return Close();
      Drop();
    });
  }

  void Close() {
    boost::system::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_send, ec);
    Socket().close(ec);
  }

  HttpServer::Impl* server_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Request request_;
  bool keep_alive_ = true;
  std::string peer_;
  std::string client_;
  const int64_t created_ = UnixSeconds();
  // The completion in progress.
  std::shared_ptr<Outbox> outbox_;
  // Held while the engine works for this connection (a turn, a session
  // query): the engine's closures hold it only weakly.
  std::shared_ptr<Connection> self_;
  openai::CompletionRequest req_;
  openai::ResponseContext ctx_;
  std::string session_id_;
  bool turn_active_ = false;
  bool headers_sent_ = false;
  bool first_delta_ = true;
  std::string text_;
  std::vector<int32_t> ids_;  // with return_token_ids, for a whole response
  std::optional<DoneEvent> done_;
  std::optional<Metrics::Turn> metric_;
  http::response<http::empty_body> sse_header_;
  std::optional<http::response_serializer<http::empty_body>> sse_serializer_;
  std::deque<Out> out_;
  bool writing_ = false;
  bool linger_ = false;  // close lingering after this answer (a refused body)
  int64_t linger_budget_ = 0;
  std::array<char, 16 << 10> drop_buffer_;
};

void HttpServer::Impl::Accept() {
  acceptor_.async_accept(net::make_strand(ioc_), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      boost::system::error_code ignored;
      if (static_cast<int64_t>(connections_.size()) >= options_.max_connections) {
        // Over the cap: a short 503 would need a read first; closing at once
        // tells the client as plainly.
        socket.close(ignored);
      } else {
        // Tokens go out as small writes the moment they exist: without
        // this, Nagle's algorithm holds each one back until the client's
        // (delayed, ~40 ms) ACK of the previous one.
        socket.set_option(tcp::no_delay(true), ignored);
        if (tls_) {
          std::make_shared<Connection<beast::ssl_stream<beast::tcp_stream>>>(this, std::move(socket), *tls_)->Start();
        } else {
          std::make_shared<Connection<beast::tcp_stream>>(this, std::move(socket))->Start();
        }
      }
    }
    Accept();
  });
}

void HttpServer::Impl::Stop() {
  if (!thread_.joinable()) return;
  net::post(ioc_, [this] {
    boost::system::error_code ec;
    acceptor_.close(ec);
    // Abort() may drop the last reference, which erases from connections_.
    std::vector<ConnectionBase*> all(connections_.begin(), connections_.end());
    for (ConnectionBase* c : all) c->Abort();
  });
  if (thread_.joinable()) thread_.join();
}

HttpServer::HttpServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(Engine* engine, const ApiKeys* keys, Metrics* metrics,
                                                              const HttpServerOptions& options) {
  auto impl = std::make_shared<Impl>(engine, keys, metrics, options);
  RETURN_IF_ERROR(impl->Listen());
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::~HttpServer() { impl_->Stop(); }

int HttpServer::port() const { return impl_->port_; }
const std::string& HttpServer::address() const { return impl_->address_; }
void HttpServer::BeginDrain() { impl_->draining_.store(true); }

}  // namespace sinkserve
