// Agreement: checks, before a job's first collective, that every rank holds the same values for
// the facts that decide which collectives it will issue and of what size (dataset sizes, batch
// size, epochs, parameter layout, optimizer, ...).
//
// Ranks that disagree on such a fact do not fail cleanly on their own: one rank posts a small
// all-reduce while its peer posts the gradient all-reduce (and MPI writes the large message into
// the small buffer), or one rank stops while the other waits forever. An Agreement turns that
// into one clear error, thrown on every rank, that names each fact that differs and every
// rank's value of it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "axon/communicator.h"

namespace axon {

// Thrown by Agreement::verify, on every rank alike.
class DisagreementError : public CommError {
 public:
  using CommError::CommError;
};

class Agreement {
 public:
  // Facts are compared in the order added. Names are for messages ("train dataset size").
  // Returns *this, so facts can be chained.
  Agreement& add_uint(std::string name, uint64_t value);
  // A checksum or fingerprint: compared like add_uint, shown in hex (0x...).
  Agreement& add_hash(std::string name, uint64_t value);
  // Compared bit for bit (so NaN agrees with the same NaN, and 0.0 differs from -0.0).
  Agreement& add_double(std::string name, double value);
  // Compared by a 64-bit hash; on a mismatch the strings themselves are exchanged for the message
  // (the first 512 bytes of each).
  Agreement& add_string(std::string name, std::string value);

  size_t size() const { return facts_.size(); }

  // Collective: every rank of `comm` must call it, with facts of the same names in the same
  // order. Costs two small all-reduces (n × 3 and n × 2·facts doubles for n ranks) when the ranks
  // agree. Throws DisagreementError (a CommError) on every rank when they do not, e.g.
  //   "<context>: ranks disagree on train dataset size: rank 0 has 60000, rank 1 has 1000"
  // (one clause per differing fact), or when the ranks check different lists of facts.
  void verify(Communicator& comm, std::string_view context) const;

 private:
  enum class Kind { uint, real, text, hash };
  struct Fact {
    std::string name;
    Kind kind;
    uint64_t bits;     // the value, the double's bits, or the string's hash
    std::string text;  // the string, for messages
  };
  std::vector<Fact> facts_;
};

// FNV-1a, 64 bits: a hash that is the same on every platform and run (std::hash is not).
uint64_t fnv1a64(const void* data, size_t bytes, uint64_t seed = 1469598103934665603ull);

}  // namespace axon
