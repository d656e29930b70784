// A small TCP key-value store through which the ranks of a job meet without MPI, like PyTorch's
// TCPStore: rank 0 hosts it on MASTER_PORT, every rank (rank 0 included) connects to
// MASTER_ADDR:MASTER_PORT as a client. Keys are strings, values are bytes.
//
// Waiting operations (get, take, wait) block until the key is set, at most the store's timeout
// (0: forever). They fail at once, instead of waiting for ever, when a rank of the job has left
// the store without closing its client (its process died or was killed): the error names that
// rank and the key waited for. A client that loses its connection to rank 0 says so, naming
// MASTER_ADDR:MASTER_PORT.
//
// Wire protocol (one request, then one reply, per connection at a time): request = op (u8), key
// length (u32), value length (u64), timeout in ms (u64; 0 = none), key, value; reply = status
// (u8: 0 ok, 1 timeout, 2 error), length (u64), payload (the value, or the error text). Integers
// little-endian as on the host (the job's hosts are assumed alike).
//
// Built with Boost.Asio (header-only in Boost 1.74, Debian's libboost-dev); absent from a build
// without Boost (AXON_HAS_TCP_STORE undefined), where make_tcp_communicator() throws.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace axon {

// Timeouts of the store and of the rendezvous: a missing rank, an unreachable rank 0.
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A client of the store, and on rank 0 the store itself (a server thread in this process).
class TcpStore {
 public:
  // Connects to host:port as `rank` of `world_size`; with is_server, first starts the store on
  // `port` (all interfaces; port 0 picks a free one, see port()). The client retries the
  // connection (rank 0 may start later) until `timeout` has passed, then throws StoreError naming
  // host, port and the last error. `timeout` (0: none) also bounds every waiting operation.
  // Throws StoreError when the port cannot be bound ("address in use").
  TcpStore(const std::string& host, int port, int rank, int world_size, bool is_server,
           std::chrono::milliseconds timeout);
  // Tells the store this rank leaves on purpose (so no one takes it for dead), unless an exception
  // is unwinding (a failing rank: the others' waits then fail naming it). The server, on rank 0,
  // then waits until every other rank has left too (at most the timeout, else 30 s; 2 s when
  // failing), so that no rank loses the store before it has read its last value.
  ~TcpStore();
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  void set(const std::string& key, const std::string& value);
  // The value of key, waiting until some rank sets it. Throws StoreError on timeout, naming the
  // key and this rank, or when a rank has died meanwhile, naming it.
  std::string get(const std::string& key);
  // get, and delete the key in the same step (for values read exactly once).
  std::string take(const std::string& key);
  // Adds delta to the integer stored at key (0 when unset) and returns the new value.
  std::int64_t add(const std::string& key, std::int64_t delta);
  // Waits until every key is set (same errors as get).
  void wait(const std::vector<std::string>& keys);
  // Whether every key is set, without waiting.
  bool check(const std::vector<std::string>& keys);
  void erase(const std::string& key);

  // Waiting operations without the store's timeout (a collective may wait for a slow rank for
  // as long as it takes; a dead rank still ends the wait).
  std::string get_no_timeout(const std::string& key);
  std::string take_no_timeout(const std::string& key);

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  // The port the store listens on (the one picked, when 0 was asked for on rank 0).
  int port() const { return port_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  // "host:port"
  std::string address() const;

  // Ranks 0..world_size-1 meet: each sets "<prefix>/<rank>" and waits for all the others. On
  // timeout, throws StoreError listing the ranks that never joined, e.g. "tcp rendezvous at
  // 127.0.0.1:29500: rank 2 of 3 did not join within 3 s (key 'rdzv/2' never set; seen from rank
  // 0)".
  void rendezvous(const std::string& prefix);

  class Server;
  class Client;

 private:
  std::string host_;
  int port_;
  int rank_, world_size_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> client_;
};

class Communicator;

// The "tcp" communicator over a TcpStore, for a job started with torchrun-style variables alone
// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; axon/rank_env.h): rank 0 hosts the store on
// MASTER_PORT, every rank connects to MASTER_ADDR:MASTER_PORT and waits for all WORLD_SIZE ranks
// (at most AXON_STORE_TIMEOUT seconds, default 300). Host collectives (all-reduce of f32/f64 with
// sum, max, min, avg; broadcast; barrier) go through rank 0 in rank order: a star, for
// correctness, not speed; the Communicator's defaults build the Tensor, async, reduce_scatter and
// allgather calls on them, and send/recv are not supported. make_communicator() returns it when the torchrun variables are the rank environment's
// source and MASTER_ADDR and MASTER_PORT are set. NCCL bootstraps from it like from MPI
// (make_nccl_communicator(*tcp, device): its ncclUniqueId goes through the store).
// Throws CommError naming the missing variable, a rank that did not join in time, a rank that
// died, an unreachable rank 0, or collectives that differ between ranks (rank 0 compares every
// call: "tcp collective mismatch at call 3: rank 0 calls allreduce(float, sum) of 4 elements,
// rank 1 calls allreduce(float, sum) of 5 elements").
std::unique_ptr<Communicator> make_tcp_communicator();

// The store's timeout from AXON_STORE_TIMEOUT (seconds, a number >= 0; 0: none), else 300 s.
// Throws StoreError naming the variable when malformed.
std::chrono::milliseconds store_timeout_from_env();

}  // namespace axon
