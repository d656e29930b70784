#include "axon/agreement.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>

namespace axon {

namespace {

constexpr size_t kMaxShownText = 512;

// A 64-bit value as two doubles, each below 2^32 and so exact: a sum all-reduce over a table in
// which every rank fills only its own row then hands every rank every other rank's values.
void put(std::vector<double>& table, size_t at, uint64_t v) {
  table[at] = static_cast<double>(v >> 32);
  table[at + 1] = static_cast<double>(v & 0xffffffffu);
}
uint64_t get(const std::vector<double>& table, size_t at) {
  return (static_cast<uint64_t>(table[at]) << 32) | static_cast<uint64_t>(table[at + 1]);
}

// "rank 0 has 60000, ranks 1, 2 have 1000": ranks grouped by value, in order of first rank.
std::string describe(const std::vector<std::string>& per_rank) {
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  for (size_t r = 0; r < per_rank.size(); ++r) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == per_rank[r]; });
    if (it == groups.end()) groups.push_back({per_rank[r], {static_cast<int>(r)}});
    else it->second.push_back(static_cast<int>(r));
  }
  std::string out;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (g == 8) {
      out += fmt::format(", and {} more values", groups.size() - g);
      break;
    }
    const auto& ranks = groups[g].second;
    std::string who = ranks.size() == 1 ? "rank " : "ranks ";
    for (size_t i = 0; i < ranks.size() && i < 8; ++i) who += fmt::format("{}{}", i ? ", " : "", ranks[i]);
    if (ranks.size() > 8) who += fmt::format(" and {} more", ranks.size() - 8);
    out += fmt::format("{}{} {} {}", g ? ", " : "", who, ranks.size() == 1 ? "has" : "have", groups[g].first);
  }
  return out;
}

}  // namespace

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t seed) {
  uint64_t h = seed;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

Agreement& Agreement::add_uint(std::string name, uint64_t value) {
  facts_.push_back({std::move(name), Kind::uint, value, {}});
  return *this;
}

Agreement& Agreement::add_hash(std::string name, uint64_t value) {
  facts_.push_back({std::move(name), Kind::hash, value, {}});
  return *this;
}

Agreement& Agreement::add_double(std::string name, double value) {
  facts_.push_back({std::move(name), Kind::real, std::bit_cast<uint64_t>(value), {}});
  return *this;
}

Agreement& Agreement::add_string(std::string name, std::string value) {
  const uint64_t h = fnv1a64(value.data(), value.size());
  facts_.push_back({std::move(name), Kind::text, h, std::move(value)});
  return *this;
}

void Agreement::verify(Communicator& comm, std::string_view context) const {
  const size_t n = static_cast<size_t>(comm.size()), me = static_cast<size_t>(comm.rank());

  // Stage 1: the list of facts itself (count, names and kinds), so that stage 2's table has the
  // same size on every rank. Its size depends only on the world size, which all ranks share.
  uint64_t names = 1469598103934665603ull;
  for (const Fact& f : facts_) {
    names = fnv1a64(f.name.data(), f.name.size(), names);
    const auto kind = static_cast<unsigned char>(f.kind);
    names = fnv1a64(&kind, 1, names);
  }
  std::vector<double> header(n * 3, 0.0);
  header[me * 3] = static_cast<double>(facts_.size());
  put(header, me * 3 + 1, names);
  comm.allreduce(header, ReduceOp::sum);
  for (size_t r = 1; r < n; ++r) {
    if (header[r * 3] != header[0] || get(header, r * 3 + 1) != get(header, 1))
      throw DisagreementError(fmt::format(
          "{}: ranks check different lists of facts before training (rank 0: {} facts, rank {}: {} facts, or their "
          "names differ); are all ranks running the same Axon build? (seen on rank {})",
          context, header[0], r, header[r * 3], me));
  }

  // Stage 2: every rank's value of every fact.
  const size_t k = facts_.size();
  std::vector<double> table(n * k * 2, 0.0);
  for (size_t f = 0; f < k; ++f) put(table, (me * k + f) * 2, facts_[f].bits);
  comm.allreduce(table, ReduceOp::sum);
  std::vector<size_t> differing;
  for (size_t f = 0; f < k; ++f)
    for (size_t r = 1; r < n; ++r)
      if (get(table, (r * k + f) * 2) != get(table, f * 2)) {
        differing.push_back(f);
        break;
      }
  if (differing.empty()) return;

  // Every rank saw the same table, so every rank takes this path and makes the same collectives:
  // strings are only hashed above, and their text is exchanged here for the message.
  std::map<size_t, std::vector<std::string>> texts;
  std::vector<size_t> text_facts;
  for (size_t f : differing)
    if (facts_[f].kind == Kind::text) text_facts.push_back(f);
  if (!text_facts.empty()) {
    std::vector<double> lengths(n * text_facts.size(), 0.0);
    for (size_t i = 0; i < text_facts.size(); ++i)
      lengths[me * text_facts.size() + i] =
          static_cast<double>(std::min(facts_[text_facts[i]].text.size(), kMaxShownText));
    comm.allreduce(lengths, ReduceOp::sum);
    for (size_t i = 0; i < text_facts.size(); ++i) {
      auto& all = texts[text_facts[i]];
      all.resize(n);
      for (size_t r = 0; r < n; ++r) {
        const auto len = static_cast<size_t>(lengths[r * text_facts.size() + i]);
        std::vector<std::byte> buf(len);
        if (r == me) std::memcpy(buf.data(), facts_[text_facts[i]].text.data(), len);
        if (len > 0) comm.broadcast(buf, static_cast<int>(r));
        all[r] = fmt::format("'{}'", std::string_view(reinterpret_cast<const char*>(buf.data()), len));
      }
    }
  }

  std::string message = std::string(context) + ": ";
  for (size_t i = 0; i < differing.size(); ++i) {
    const size_t f = differing[i];
    std::vector<std::string> values(n);
    for (size_t r = 0; r < n; ++r) {
      const uint64_t bits = get(table, (r * k + f) * 2);
      switch (facts_[f].kind) {
        case Kind::uint: values[r] = std::to_string(bits); break;
        case Kind::real: values[r] = fmt::format("{}", std::bit_cast<double>(bits)); break;
        case Kind::text: values[r] = texts[f][r]; break;
        case Kind::hash: values[r] = fmt::format("{:#018x}", bits); break;
      }
    }
    message += fmt::format("{}ranks disagree on {}: {}", i ? "; " : "", facts_[f].name, describe(values));
  }
  message += fmt::format(" (seen on rank {}; every rank must run with the same data and options)", me);
  throw DisagreementError(message);
}

}  // namespace axon
