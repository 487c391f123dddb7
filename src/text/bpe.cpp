#include "text/bpe.h"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <queue>

#include "clipkit/error.h"
#include "text/utf8.h"

extern "C" {
extern const unsigned char clipkit_bpe_vocab_gz[];
extern const unsigned char clipkit_bpe_vocab_gz_end[];
}

namespace clipkit::text {

namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

std::string BpeVocab::embedded_merges_text() {
  const size_t size = static_cast<size_t>(clipkit_bpe_vocab_gz_end - clipkit_bpe_vocab_gz);
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
    throw Error(ErrorCode::Internal, "tokenizer vocabulary: cannot initialise zlib");
  zs.next_in = const_cast<Bytef*>(clipkit_bpe_vocab_gz);
  zs.avail_in = static_cast<uInt>(size);
  std::string out;
  char buf[1 << 16];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      throw Error(ErrorCode::Format, "tokenizer vocabulary: corrupt embedded bpe_simple_vocab_16e6.txt.gz");
    }
    out.append(buf, sizeof buf - zs.avail_out);
  } while (rc != Z_STREAM_END);
  inflateEnd(&zs);
  return out;
}

BpeVocab::BpeVocab(const std::string& text) {
  // bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the others get 256 + n.
  std::vector<int> order;  // vocabulary order of the 256 byte symbols
  char32_t byte_char[256];
  bool printable[256] = {};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  for (int b = 0; b < 256; ++b)
    if (printable[b]) order.push_back(b), byte_char[b] = static_cast<char32_t>(b);
  int extra = 0;
  for (int b = 0; b < 256; ++b)
    if (!printable[b]) order.push_back(b), byte_char[b] = static_cast<char32_t>(256 + extra++);

  token_str_.reserve(kVocabSize);
  token_bytes_.reserve(kVocabSize);
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < order.size(); ++i) {
      const int b = order[i];
      std::string s;
      append_utf8(s, byte_char[b]);
      std::string raw(1, static_cast<char>(b));
      if (pass == 1) s += "</w>", raw += "</w>";
      if (pass == 0) byte_id_[b] = static_cast<int32_t>(i);
      token_str_.push_back(std::move(s));
      token_bytes_.push_back(std::move(raw));
    }
  }

  std::unordered_map<std::string, int32_t> encoder;
  encoder.reserve(kVocabSize * 2);
  for (size_t i = 0; i < token_str_.size(); ++i) encoder[token_str_[i]] = static_cast<int32_t>(i);

  // Lines 2 .. 48895 of the file are the merges "first second", in rank order.
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(kNumMerges);
  size_t pos = text.find('\n');
  if (pos == std::string::npos) throw Error(ErrorCode::Format, "tokenizer vocabulary: no merges");
  ++pos;
  while (static_cast<int>(pairs.size()) < kNumMerges) {
    if (pos >= text.size())
      throw Error(ErrorCode::Format, "tokenizer vocabulary: only " + std::to_string(pairs.size()) + " merges, expected " +
                                         std::to_string(kNumMerges));
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() || line.find(' ', sp + 1) != std::string::npos)
      throw Error(ErrorCode::Format, "tokenizer vocabulary: malformed merge line " + std::to_string(pairs.size() + 2));
    pairs.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  for (const auto& [a, b] : pairs) {
    token_str_.push_back(a + b);
    token_bytes_.emplace_back();  // filled below once the parts are known
  }
  token_str_.push_back("<|startoftext|>");
  token_bytes_.push_back("<|startoftext|>");
  token_str_.push_back("<|endoftext|>");
  token_bytes_.push_back("<|endoftext|>");
  for (size_t i = 512; i < token_str_.size(); ++i) encoder[token_str_[i]] = static_cast<int32_t>(i);
  if (encoder.size() != static_cast<size_t>(kVocabSize))
    throw Error(ErrorCode::Format, "tokenizer vocabulary: " + std::to_string(encoder.size()) + " distinct tokens, expected " +
                                       std::to_string(kVocabSize));

  merges_.reserve(kNumMerges * 2);
  for (size_t r = 0; r < pairs.size(); ++r) {
    const auto ia = encoder.find(pairs[r].first), ib = encoder.find(pairs[r].second);
    if (ia == encoder.end() || ib == encoder.end())
      throw Error(ErrorCode::Format, "tokenizer vocabulary: merge line " + std::to_string(r + 2) + " uses an unknown symbol");
    const int32_t id = static_cast<int32_t>(512 + r);
    token_bytes_[static_cast<size_t>(id)] = token_bytes_[static_cast<size_t>(ia->second)] + token_bytes_[static_cast<size_t>(ib->second)];
    merges_.emplace(pair_key(ia->second, ib->second), Merge{static_cast<int32_t>(r), id});
  }
  if (merges_.size() != pairs.size())
    throw Error(ErrorCode::Format, "tokenizer vocabulary: duplicate merge pairs");
}

void BpeVocab::bpe_reference(const std::string& piece, std::vector<int32_t>& out) const {
  const size_t n = piece.size();
  if (n == 0) return;
  std::vector<int32_t> word(n);
  for (size_t i = 0; i < n; ++i) word[i] = byte_id_[static_cast<uint8_t>(piece[i])];
  word[n - 1] += 256;  // the last symbol carries "</w>"
  std::vector<int32_t> next;
  next.reserve(n);
  while (word.size() > 1) {
    // The adjacent pair with the lowest merge rank.
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    int32_t first = -1, second = -1, merged = -1;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merges_.find(pair_key(word[i], word[i + 1]));
      if (it != merges_.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        first = word[i];
        second = word[i + 1];
        merged = it->second.id;
      }
    }
    if (merged < 0) break;
    // Merge every occurrence, left to right, without overlaps.
    next.clear();
    for (size_t i = 0; i < word.size();) {
      if (word[i] == first && i + 1 < word.size() && word[i + 1] == second) {
        next.push_back(merged);
        i += 2;
      } else {
        next.push_back(word[i]);
        ++i;
      }
    }
    word.swap(next);
  }
  out.insert(out.end(), word.begin(), word.end());
}

// Same semantics as bpe_reference: take the lowest rank present, merge all of its occurrences left
// to right, repeat. A heap of (rank, position) finds the lowest rank; all entries of that rank are
// then applied in position order, skipping stale ones, before the next rank is considered.
void BpeVocab::bpe(const std::string& piece, std::vector<int32_t>& out) const {
  const int n = static_cast<int>(piece.size());
  if (n == 0) return;
  if (n < 24) {  // short pieces (nearly all words): the direct loop is faster
    bpe_reference(piece, out);
    return;
  }
  std::vector<int32_t> sym(static_cast<size_t>(n));
  std::vector<int> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    sym[static_cast<size_t>(i)] = byte_id_[static_cast<uint8_t>(piece[static_cast<size_t>(i)])];
    prev[static_cast<size_t>(i)] = i - 1;
    next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
  }
  sym[static_cast<size_t>(n - 1)] += 256;
  std::vector<char> alive(static_cast<size_t>(n), 1);
  using Entry = std::pair<int32_t, int>;  // (rank, left position)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto push_pair = [&](int left) {
    if (left < 0) return;
    const int right = next[static_cast<size_t>(left)];
    if (right < 0) return;
    if (const Merge* m = find_merge(sym[static_cast<size_t>(left)], sym[static_cast<size_t>(right)]))
      heap.emplace(m->rank, left);
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);
  std::vector<int> positions;
  while (!heap.empty()) {
    const int32_t rank = heap.top().first;
    positions.clear();
    while (!heap.empty() && heap.top().first == rank) {
      positions.push_back(heap.top().second);
      heap.pop();
    }
    std::sort(positions.begin(), positions.end());
    for (const int p : positions) {
      // Still the pair of this rank? (It may have been consumed by an earlier merge.)
      if (!alive[static_cast<size_t>(p)]) continue;
      const int q = next[static_cast<size_t>(p)];
      if (q < 0) continue;
      const Merge* m = find_merge(sym[static_cast<size_t>(p)], sym[static_cast<size_t>(q)]);
      if (!m || m->rank != rank) continue;
      sym[static_cast<size_t>(p)] = m->id;
      alive[static_cast<size_t>(q)] = 0;
      const int r = next[static_cast<size_t>(q)];
      next[static_cast<size_t>(p)] = r;
      if (r >= 0) prev[static_cast<size_t>(r)] = p;
      push_pair(prev[static_cast<size_t>(p)]);
      push_pair(p);
    }
  }
  for (int i = 0; i >= 0; i = next[static_cast<size_t>(i)]) out.push_back(sym[static_cast<size_t>(i)]);
}

}  // namespace clipkit::text
