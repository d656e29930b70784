// The TCP key-value store (see axon/tcp_store.h): an asynchronous Boost.Asio server on one thread
// of rank 0, and a blocking client with deadlines in every rank.
#include "axon/tcp_store.h"

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it (C++20)

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace axon {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

enum Op : std::uint8_t { kHello = 1, kSet, kGet, kTake, kAdd, kCheck, kErase, kBye };
enum Status : std::uint8_t { kOk = 0, kTimeout = 1, kFailed = 2 };

constexpr size_t kHeaderBytes = 1 + 4 + 8 + 8;  // op, key length, value length, timeout (ms)
constexpr std::uint32_t kMaxKey = 1u << 16;
constexpr std::uint64_t kMaxValue = std::uint64_t{1} << 34;  // 16 GiB: a corrupt header, not a value

template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <class T>
T get_at(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string seconds(std::chrono::milliseconds ms) { return fmt::format("{:g} s", static_cast<double>(ms.count()) / 1000.0); }

}  // namespace

// ---- server -----------------------------------------------------------------------------------

class TcpStore::Server {
 public:
  Server(int port, int world_size) : acceptor_(io_), world_size_(world_size) {
    boost::system::error_code ec;
    const tcp::endpoint endpoint(tcp::v4(), static_cast<unsigned short>(port));
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      throw StoreError(fmt::format("tcp store on rank 0: cannot listen on port {}: {} (MASTER_PORT in use by another job?)",
                                   port, ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }

  ~Server() {
    asio::post(io_, [this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      for (auto& s : sessions_) s->socket.close(ignored);
      for (auto& [key, w] : waiters_) w.finish();
      waiters_.clear();
      sessions_.clear();
      io_.stop();
    });
    if (thread_.joinable()) thread_.join();
  }

  int port() const { return port_; }

  // Waits until every client other than rank 0's own has left (said bye or disconnected).
  void wait_for_clients(std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex_);
    left_.wait_for(lock, limit, [&] { return open_ranks_ == 0; });
  }

 private:
  struct Session {
    explicit Session(asio::io_context& io) : socket(io) {}
    tcp::socket socket;
    int rank = -1;
    bool bye = false;
    char header[kHeaderBytes];
    std::string body;
    std::string reply;
  };
  using SessionPtr = std::shared_ptr<Session>;
  struct Waiter {
    SessionPtr session;
    bool take;
    std::shared_ptr<asio::steady_timer> timer;  // cancelled once answered; its handler may already be queued,
    std::shared_ptr<bool> answered;             // so it checks this first
    void finish() const {
      *answered = true;
      timer->cancel();
    }
  };

  void accept() {
    auto session = std::make_shared<Session>(io_);
    acceptor_.async_accept(session->socket, [this, session](boost::system::error_code ec) {
      if (ec) return;  // closed
      boost::system::error_code ignored;
      session->socket.set_option(tcp::no_delay(true), ignored);
      sessions_.insert(session);
      read_header(session);
      accept();
    });
  }

  void read_header(const SessionPtr& s) {
    asio::async_read(s->socket, asio::buffer(s->header, kHeaderBytes), [this, s](boost::system::error_code ec, size_t) {
      if (ec) return closed(s);
      const std::uint32_t key_len = get_at<std::uint32_t>(s->header + 1);
      const std::uint64_t value_len = get_at<std::uint64_t>(s->header + 5);
      if (key_len > kMaxKey || value_len > kMaxValue) return closed(s);  // not our protocol
      s->body.resize(key_len + value_len);
      asio::async_read(s->socket, asio::buffer(s->body), [this, s, key_len](boost::system::error_code ec2, size_t) {
        if (ec2) return closed(s);
        const auto op = static_cast<Op>(s->header[0]);
        const auto timeout = std::chrono::milliseconds(get_at<std::uint64_t>(s->header + 13));
        std::string key = s->body.substr(0, key_len), value = s->body.substr(key_len);
        // The next request can only come after this one's reply, but the read is posted now so
        // that a client that dies while it waits is noticed at once (end of stream).
        read_header(s);
        handle(s, op, std::move(key), std::move(value), timeout);
      });
    });
  }

  void respond(const SessionPtr& s, Status status, const std::string& payload) {
    s->reply.clear();
    put<std::uint8_t>(s->reply, status);
    put<std::uint64_t>(s->reply, payload.size());
    s->reply += payload;
    asio::async_write(s->socket, asio::buffer(s->reply), [](boost::system::error_code, size_t) {});
  }

  void handle(const SessionPtr& s, Op op, std::string key, std::string value, std::chrono::milliseconds timeout) {
    switch (op) {
      case kHello: {
        int rank = -1;
        std::from_chars(value.data(), value.data() + value.size(), rank);
        s->rank = rank;
        if (rank != 0) {
          std::lock_guard lock(mutex_);
          ++open_ranks_;
        }
        return respond(s, kOk, "");
      }
      case kSet:
        data_[key] = std::move(value);
        respond(s, kOk, "");
        return wake(key);
      case kAdd: {
        std::int64_t current = 0, delta = 0;
        if (auto it = data_.find(key); it != data_.end())
          std::from_chars(it->second.data(), it->second.data() + it->second.size(), current);
        std::from_chars(value.data(), value.data() + value.size(), delta);
        data_[key] = std::to_string(current + delta);
        respond(s, kOk, data_[key]);
        return wake(key);
      }
      case kCheck: {
        // Keys separated by '\0' in the value.
        bool all = true;
        size_t at = 0;
        while (at <= value.size() && all) {
          size_t end = value.find('\0', at);
          if (end == std::string::npos) end = value.size();
          all = data_.count(value.substr(at, end - at)) > 0;
          at = end + 1;
        }
        return respond(s, kOk, all ? "1" : "0");
      }
      case kErase:
        data_.erase(key);
        return respond(s, kOk, "");
      case kBye:
        leave(s);
        return respond(s, kOk, "");
      case kGet:
      case kTake: {
        if (auto it = data_.find(key); it != data_.end()) {
          std::string v = op == kTake ? std::move(it->second) : it->second;
          if (op == kTake) data_.erase(it);
          return respond(s, kOk, v);
        }
        if (!dead_.empty()) return respond(s, kFailed, dead_);
        auto timer = std::make_shared<asio::steady_timer>(io_);
        auto answered = std::make_shared<bool>(false);
        auto it = waiters_.emplace(key, Waiter{s, op == kTake, timer, answered});
        if (timeout.count() > 0) {
          timer->expires_after(timeout);
          // `it` is valid while *answered is false: every erase of a waiter finishes it first.
          timer->async_wait([this, it, s, answered](boost::system::error_code) {
            if (*answered) return;
            it->second.finish();
            waiters_.erase(it);
            respond(s, kTimeout, "");
          });
        }
        return;
      }
    }
    closed(s);  // an unknown op: not our protocol
  }

  // Answers the waiters of a key just set (a take consumes it: later waiters keep waiting).
  void wake(const std::string& key) {
    auto [first, last] = waiters_.equal_range(key);
    for (auto it = first; it != last;) {
      auto data = data_.find(key);
      if (data == data_.end()) break;
      Waiter w = it->second;
      it = waiters_.erase(it);
      w.finish();
      if (w.take) {
        std::string v = std::move(data->second);
        data_.erase(data);
        respond(w.session, kOk, v);
      } else {
        respond(w.session, kOk, data->second);
      }
    }
  }

  void leave(const SessionPtr& s) {
    if (s->bye) return;
    s->bye = true;
    if (s->rank > 0) {
      std::lock_guard lock(mutex_);
      --open_ranks_;
      left_.notify_all();
    }
  }

  // The connection ended. Without a bye first, the rank died: every wait, now and later, that a
  // set has not answered fails naming it (the key it waits for may have been that rank's to set).
  void closed(const SessionPtr& s) {
    if (!sessions_.erase(s)) return;
    boost::system::error_code ignored;
    s->socket.close(ignored);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->second.session == s) {
        it->second.finish();
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    if (s->bye || s->rank < 0) return;
    if (dead_.empty()) {
      dead_ = fmt::format("rank {} of {} left the job without closing its connection to the store (its process died or "
                          "was killed)",
                          s->rank, world_size_);
    }
    leave(s);
    for (auto& [key, w] : waiters_) {
      w.finish();
      respond(w.session, kFailed, dead_);
    }
    waiters_.clear();
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  int world_size_;
  int port_ = 0;
  std::thread thread_;
  // Touched only on the server thread:
  std::set<SessionPtr> sessions_;
  std::map<std::string, std::string> data_;
  std::multimap<std::string, Waiter> waiters_;
  std::string dead_;  // why waits fail: the first rank that died; "" while none has
  // Shared with wait_for_clients:
  std::mutex mutex_;
  std::condition_variable left_;
  int open_ranks_ = 0;  // clients of ranks > 0 that said hello and have not left
};

// ---- client -----------------------------------------------------------------------------------

class TcpStore::Client {
 public:
  Client(const std::string& host, int port, int rank, std::chrono::milliseconds timeout)
      : socket_(io_), where_(fmt::format("{}:{}", host, port)), rank_(rank) {
    // Rank 0 may not listen yet: retry until the timeout.
    const auto deadline = std::chrono::steady_clock::now() + (timeout.count() > 0 ? timeout : std::chrono::hours(24 * 365));
    std::string last_error;
    while (true) {
      boost::system::error_code ec;
      tcp::resolver resolver(io_);
      auto endpoints = resolver.resolve(host, std::to_string(port), ec);
      if (!ec) {
        ec = asio::error::would_block;
        asio::async_connect(socket_, endpoints, [&](boost::system::error_code e, const tcp::endpoint&) { ec = e; });
        io_.restart();
        io_.run_until(deadline);
        if (ec == asio::error::would_block) {
          boost::system::error_code ignored;
          socket_.close(ignored);
          io_.restart();
          io_.run();
        }
      }
      if (!ec) break;
      last_error = ec.message();
      boost::system::error_code ignored;
      socket_.close(ignored);
      if (std::chrono::steady_clock::now() + std::chrono::milliseconds(100) >= deadline) {
        throw StoreError(fmt::format("tcp store: rank {} cannot reach the store of rank 0 at {} (MASTER_ADDR:MASTER_PORT) "
                                     "within {}: {}; is rank 0 running, with the same MASTER_ADDR and MASTER_PORT?",
                                     rank, where_, seconds(timeout), last_error));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    boost::system::error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
  }

  struct Reply {
    Status status;
    std::string payload;
  };

  // One request and its reply. The server answers a wait by `timeout` (0: never); the client
  // gives it 10 s more before it takes the store for unreachable.
  Reply request(Op op, const std::string& key, const std::string& value, std::chrono::milliseconds timeout) {
    if (broken_) throw StoreError(fmt::format("tcp store: rank {} lost its connection to the store at {} earlier", rank_, where_));
    std::string message;
    put<std::uint8_t>(message, op);
    put<std::uint32_t>(message, static_cast<std::uint32_t>(key.size()));
    put<std::uint64_t>(message, value.size());
    put<std::uint64_t>(message, static_cast<std::uint64_t>(timeout.count()));
    message += key;
    message += value;
    std::optional<std::chrono::steady_clock::time_point> deadline;
    if (timeout.count() > 0) deadline = std::chrono::steady_clock::now() + timeout + std::chrono::seconds(10);
    transfer(true, asio::buffer(message), deadline, key);
    char head[9];
    transfer(false, asio::buffer(head, sizeof head), deadline, key);
    Reply reply{static_cast<Status>(head[0]), std::string(get_at<std::uint64_t>(head + 1), '\0')};
    if (!reply.payload.empty()) transfer(false, asio::buffer(reply.payload), deadline, key);
    return reply;
  }

  bool broken() const { return broken_; }

 private:
  template <class Buffer>
  void transfer(bool write, const Buffer& buffer, std::optional<std::chrono::steady_clock::time_point> deadline,
                const std::string& key) {
    boost::system::error_code ec = asio::error::would_block;
    auto done = [&](boost::system::error_code e, size_t) { ec = e; };
    if (write) asio::async_write(socket_, buffer, done);
    else asio::async_read(socket_, buffer, done);
    io_.restart();
    if (deadline) io_.run_until(*deadline);
    else io_.run();
    if (ec == asio::error::would_block) {
      broken_ = true;
      boost::system::error_code ignored;
      socket_.close(ignored);
      io_.restart();
      io_.run();
      throw StoreError(fmt::format("tcp store: rank {} got no answer from the store of rank 0 at {} about key '{}' "
                                   "(rank 0 stuck?)",
                                   rank_, where_, key));
    }
    if (ec) {
      broken_ = true;
      throw StoreError(fmt::format("tcp store: rank {} lost its connection to the store of rank 0 at {} while it {} key "
                                   "'{}': {} (rank 0 died or was killed?)",
                                   rank_, where_, write ? "asked about" : "waited for", key, ec.message()));
    }
  }

  asio::io_context io_;
  tcp::socket socket_;
  std::string where_;
  int rank_;
  bool broken_ = false;
};

// ---- TcpStore ---------------------------------------------------------------------------------

TcpStore::TcpStore(const std::string& host, int port, int rank, int world_size, bool is_server,
                   std::chrono::milliseconds timeout)
    : host_(host), port_(port), rank_(rank), world_size_(world_size), timeout_(timeout) {
  if (port < 0 || port > 65535) throw StoreError(fmt::format("tcp store: port {} is not a TCP port (0 to 65535)", port));
  if (is_server) {
    server_ = std::make_unique<Server>(port, world_size);
    port_ = server_->port();
  }
  client_ = std::make_unique<Client>(is_server ? std::string("127.0.0.1") : host, port_, rank, timeout);
  client_->request(kHello, "", std::to_string(rank), std::chrono::milliseconds(0));
}

TcpStore::~TcpStore() {
  // A bye only when leaving normally: a rank that unwinds an exception (or is killed) has failed,
  // and the others must learn it rather than wait for it.
  if (client_ && !client_->broken() && std::uncaught_exceptions() == 0) {
    try {
      client_->request(kBye, "", "", std::chrono::milliseconds(0));
    } catch (const StoreError&) {
    }
  }
  client_.reset();
  // The store outlives the other ranks' last reads. When rank 0 is failing, a little: long
  // enough for the others to learn the cause from the store (their waits fail naming the rank
  // that died) rather than from a lost connection.
  if (server_) {
    const std::chrono::milliseconds limit = std::uncaught_exceptions() > 0 ? std::chrono::milliseconds(2000)
                                            : timeout_.count() > 0          ? timeout_
                                                                            : std::chrono::milliseconds(30000);
    server_->wait_for_clients(limit);
  }
}

std::string TcpStore::address() const { return fmt::format("{}:{}", host_, port_); }

namespace {

std::string checked(TcpStore::Client& client, int rank, const std::string& what, const std::string& key,
                    std::chrono::milliseconds timeout, const std::string& where, std::uint8_t op, const std::string& value) {
  auto reply = client.request(static_cast<Op>(op), key, value, timeout);
  if (reply.status == kOk) return reply.payload;
  if (reply.status == kTimeout) {
    throw StoreError(fmt::format("tcp store at {}: rank {} waited {} for key '{}' ({}), which no rank set (timeout: "
                                 "AXON_STORE_TIMEOUT)",
                                 where, rank, seconds(timeout), key, what));
  }
  throw StoreError(fmt::format("tcp store at {}: rank {} waits for key '{}' ({}), but {}", where, rank, key, what, reply.payload));
}

}  // namespace

void TcpStore::set(const std::string& key, const std::string& value) {
  checked(*client_, rank_, "set", key, timeout_, address(), kSet, value);
}
std::string TcpStore::get(const std::string& key) { return checked(*client_, rank_, "get", key, timeout_, address(), kGet, ""); }
std::string TcpStore::take(const std::string& key) { return checked(*client_, rank_, "take", key, timeout_, address(), kTake, ""); }
std::string TcpStore::get_no_timeout(const std::string& key) {
  return checked(*client_, rank_, "get", key, std::chrono::milliseconds(0), address(), kGet, "");
}
std::string TcpStore::take_no_timeout(const std::string& key) {
  return checked(*client_, rank_, "take", key, std::chrono::milliseconds(0), address(), kTake, "");
}
std::int64_t TcpStore::add(const std::string& key, std::int64_t delta) {
  const std::string v = checked(*client_, rank_, "add", key, timeout_, address(), kAdd, std::to_string(delta));
  std::int64_t n = 0;
  std::from_chars(v.data(), v.data() + v.size(), n);
  return n;
}
void TcpStore::wait(const std::vector<std::string>& keys) {
  for (const std::string& key : keys) get(key);
}
bool TcpStore::check(const std::vector<std::string>& keys) {
  std::string list;
  for (size_t i = 0; i < keys.size(); ++i) list += (i ? std::string(1, '\0') : std::string()) + keys[i];
  return checked(*client_, rank_, "check", "", timeout_, address(), kCheck, list) == "1";
}
void TcpStore::erase(const std::string& key) { checked(*client_, rank_, "erase", key, timeout_, address(), kErase, ""); }

void TcpStore::rendezvous(const std::string& prefix) {
  set(prefix + "/" + std::to_string(rank_), std::to_string(world_size_));
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < world_size_; ++r) {
    const std::string key = prefix + "/" + std::to_string(r);
    auto left = timeout_ - std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    if (timeout_.count() > 0 && left.count() <= 0) left = std::chrono::milliseconds(1);
    auto reply = client_->request(kGet, key, "", timeout_.count() > 0 ? left : std::chrono::milliseconds(0));
    if (reply.status == kTimeout) {
      std::vector<int> missing;
      for (int m = r; m < world_size_; ++m)
        if (!check({prefix + "/" + std::to_string(m)})) missing.push_back(m);
      std::string list;
      for (size_t i = 0; i < missing.size(); ++i)
        list += (i == 0 ? "" : i + 1 == missing.size() ? " and " : ", ") + std::to_string(missing[i]);
      throw StoreError(fmt::format("tcp rendezvous at {}: rank{} {} of {} did not join within {} (key{} '{}/{}' never set; "
                                   "seen from rank {}): {} running, with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE? "
                                   "(timeout: AXON_STORE_TIMEOUT)",
                                   address(), missing.size() == 1 ? "" : "s", list, world_size_, seconds(timeout_),
                                   missing.size() == 1 ? "" : "s", prefix, missing.size() == 1 ? list : "<rank>", rank_,
                                   missing.size() == 1 ? "is its process" : "are their processes"));
    }
    if (reply.status == kFailed) {
      throw StoreError(fmt::format("tcp rendezvous at {}: rank {} waits for rank {}, but {}", address(), rank_, r, reply.payload));
    }
    if (reply.payload != std::to_string(world_size_)) {
      throw StoreError(fmt::format("tcp rendezvous at {}: rank {} has WORLD_SIZE={} but rank {} has WORLD_SIZE={}", address(),
                                   rank_, world_size_, r, reply.payload));
    }
  }
}

std::chrono::milliseconds store_timeout_from_env() {
  const char* text = std::getenv("AXON_STORE_TIMEOUT");
  if (!text || !*text) return std::chrono::seconds(300);
  double s = -1;
  const char* end = text + std::strlen(text);
  auto [stop, err] = std::from_chars(text, end, s);
  if (err != std::errc() || stop != end || !(s >= 0) || s > 7 * 24 * 3600.0)
    throw StoreError(fmt::format("AXON_STORE_TIMEOUT='{}' is not a number of seconds from 0 (no timeout) to 604800", text));
  return std::chrono::milliseconds(static_cast<long long>(s * 1000));
}

}  // namespace axon
