// The id pass of phase 2 (see shard_store.h): the final id of every file of the list, with rank 0's
// memory bounded by BuildOptions::id_memory whatever the number of files.
//
// 1. One pass over the shards in list order writes a record (content hash, position, whether the row
//    carries its vector) for every file that was read, into one of P buckets chosen by the hash's
//    first bits; failed files are marked in a position-indexed file of 8 bytes per file (mapped).
//    With P = 1 the records go straight to step 2, without a bucket file.
// 2. Each bucket on its own: its records are in list order, so the first record of each content is
//    its first appearance; a hash table of the bucket's contents (1/P of them) marks every later
//    record of a content as a duplicate of the first one's position.
// 3. One sweep in list order numbers the first appearances and gives each duplicate the id of the
//    position it points to (an earlier position, numbered already).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "dist/shard_store.h"

namespace clipkit::dist {

namespace {

using Sha256Key = std::array<uint8_t, 32>;
struct Sha256KeyHash {
  size_t operator()(const Sha256Key& k) const noexcept {
    size_t h;  // the bytes of a SHA-256 are already uniformly distributed
    std::memcpy(&h, k.data(), sizeof h);
    return h;
  }
};

bool parse_sha256(const std::string& hex, Sha256Key* out) {
  if (hex.size() != 64) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    const int a = nibble(hex[2 * i]), b = nibble(hex[2 * i + 1]);
    if (a < 0 || b < 0) return false;
    (*out)[i] = static_cast<uint8_t>(a * 16 + b);
  }
  return true;
}

// One file's entry in a bucket: its content hash and its position in the list, the top bit of which
// says whether the shard row carries the vector (a content seen earlier in the same shard does not).
struct Record {
  Sha256Key key;
  int64_t pos_flags;
};
static_assert(sizeof(Record) == 40, "bucket records are written as they are");
constexpr int64_t kHasVector = int64_t{1} << 62;

// Values of the position-indexed file before step 3 numbers it.
constexpr int64_t kFirst = 0;     // a content's first appearance (the file's zeros)
constexpr int64_t kFailed = -1;   // a file that could not be read; from step 2, p + 1: a duplicate of position p

// The position-indexed file, mapped read-write.
class PositionMap {
 public:
  PositionMap(const std::string& path, int64_t n) : path_(path), n_(n) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0 || ::ftruncate(fd_, static_cast<off_t>(n) * 8) != 0) fail("cannot create");
    if (n == 0) return;
    void* p = ::mmap(nullptr, static_cast<size_t>(n) * 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) fail("cannot map");
    v_ = static_cast<int64_t*>(p);
  }
  ~PositionMap() {
    if (v_) ::munmap(v_, static_cast<size_t>(n_) * 8);
    if (fd_ >= 0) ::close(fd_);
  }
  PositionMap(const PositionMap&) = delete;
  PositionMap& operator=(const PositionMap&) = delete;
  int64_t* data() { return v_; }

 private:
  [[noreturn]] void fail(const char* what) {
    const int err = errno;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    throw Error(ErrorCode::Io, std::string(what) + " " + path_ + ": " + std::strerror(err));
  }
  std::string path_;
  int64_t n_ = 0;
  int fd_ = -1;
  int64_t* v_ = nullptr;
};

void append_file(const std::string& path, const char* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  size_t done = 0;
  while (fd >= 0 && done < size) {
    const ssize_t w = ::write(fd, data + done, size - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    done += static_cast<size_t>(w);
  }
  const int err = errno;
  if (fd >= 0) ::close(fd);
  if (done != size) throw Error(ErrorCode::Io, "cannot write " + path + ": " + std::strerror(err));
}

}  // namespace

int id_pass_buckets(int64_t files, int64_t memory) {
  const int64_t budget = std::max<int64_t>(memory, 1);
  const int64_t p = (files * kIdPassBytesPerContent + budget - 1) / budget;
  return static_cast<int>(std::clamp<int64_t>(p, 1, kIdPassMaxBuckets));
}

IdPassResult assign_ids(const std::string& dir, const ShardSet& s, int64_t memory) {
  const int64_t total = s.id.total;
  IdPassResult rep;
  rep.buckets = id_pass_buckets(total, memory);
  const fs::path scratch = fs::path(shards_dir(dir)) / kIdPassDir;
  std::error_code ec;
  fs::remove_all(scratch, ec);  // what an interrupted pass left
  fs::create_directories(scratch, ec);
  if (ec) throw Error(ErrorCode::Io, "cannot create " + scratch.string() + ": " + ec.message());
  auto map = std::make_unique<PositionMap>((scratch / "positions.bin").string(), total);
  int64_t* v = map->data();
  auto shard_of = [&](int64_t pos) {
    int i = 0;
    while (i + 1 < s.n && s.metas[static_cast<size_t>(i + 1)].first <= pos) ++i;
    return i;
  };

  // Step 2 for one bucket (its records in list order).
  std::unordered_map<Sha256Key, int64_t, Sha256KeyHash> first_pos;
  auto resolve = [&](const Record& r) {
    const int64_t pos = r.pos_flags & ~kHasVector;
    auto [it, fresh] = first_pos.emplace(r.key, pos);
    if (!fresh) {
      v[pos] = it->second + 1;
    } else if (!(r.pos_flags & kHasVector)) {
      static const char* kHex = "0123456789abcdef";
      std::string sha;
      for (uint8_t b : r.key) sha += {kHex[b >> 4], kHex[b & 15]};
      throw Error(ErrorCode::Format,
                  "shard file " + shard_path(dir, shard_of(pos), s.n) + ": content " + sha + " first appears without its vector");
    }
  };

  // Step 1.
  const bool direct = rep.buckets == 1;
  const size_t per_bucket = direct ? 0 : std::clamp<size_t>(static_cast<size_t>(memory / 8 / rep.buckets), 4096, size_t{1} << 20) / sizeof(Record);
  std::vector<std::vector<Record>> pending(direct ? 0 : static_cast<size_t>(rep.buckets));
  auto bucket_path = [&](int b) { return (scratch / ("bucket-" + std::to_string(b) + ".bin")).string(); };
  auto flush = [&](int b) {
    auto& q = pending[static_cast<size_t>(b)];
    if (q.empty()) return;
    append_file(bucket_path(b), reinterpret_cast<const char*>(q.data()), q.size() * sizeof(Record));
    q.clear();
  };
  for (int i = 0; i < s.n; ++i) {
    const ShardMeta& m = s.metas[static_cast<size_t>(i)];
    Db db;
    db.open(shard_path(dir, i, s.n), false, true);
    Stmt rows(db, "SELECT sha256, error IS NULL, vector IS NOT NULL FROM rows ORDER BY pos");
    int64_t k = 0;
    while (rows.step()) {
      if (k == m.count) throw Error(ErrorCode::Format, "shard file " + db.path() + " holds more than the " + std::to_string(m.count) + " rows of its slice");
      const int64_t pos = m.first + k++;
      if (rows.i64(1) == 0) {
        v[pos] = kFailed;
        continue;
      }
      const std::string sha = rows.text(0);
      Record r;
      if (!parse_sha256(sha, &r.key)) throw Error(ErrorCode::Format, "shard file " + db.path() + " holds a malformed content hash '" + sha + "'");
      r.pos_flags = pos | (rows.i64(2) ? kHasVector : 0);
      if (direct) {
        resolve(r);
        continue;
      }
      uint64_t top;  // the hash's first 8 bytes, big-endian
      std::memcpy(&top, r.key.data(), sizeof top);
      top = __builtin_bswap64(top);
      const int b = static_cast<int>((static_cast<unsigned __int128>(top) * static_cast<unsigned>(rep.buckets)) >> 64);
      auto& q = pending[static_cast<size_t>(b)];
      if (q.capacity() == 0) q.reserve(per_bucket);
      q.push_back(r);
      if (q.size() >= per_bucket) flush(b);
    }
    if (k != m.count)
      throw Error(ErrorCode::Format, "shard file " + db.path() + " holds " + std::to_string(k) + " rows, expected " + std::to_string(m.count));
  }
  if (direct) rep.largest_bucket = static_cast<int64_t>(first_pos.size());
  first_pos = {};

  // Step 2, bucket by bucket.
  for (int b = 0; b < rep.buckets && !direct; ++b) {
    flush(b);
    pending[static_cast<size_t>(b)] = {};
    const std::string path = bucket_path(b);
    if (!fs::exists(path, ec)) continue;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(ErrorCode::Io, "cannot open " + path + ": " + std::strerror(errno));
    std::vector<Record> buf(std::max<size_t>(per_bucket, 1));
    size_t have = 0;  // bytes in buf
    for (;;) {
      const ssize_t r = ::read(fd, reinterpret_cast<char*>(buf.data()) + have, buf.size() * sizeof(Record) - have);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        const int err = errno;
        ::close(fd);
        throw Error(ErrorCode::Io, "cannot read " + path + ": " + std::strerror(err));
      }
      have += static_cast<size_t>(r);
      const size_t whole = have / sizeof(Record);
      try {
        for (size_t j = 0; j < whole; ++j) resolve(buf[j]);
      } catch (...) {
        ::close(fd);
        throw;
      }
      std::memmove(buf.data(), reinterpret_cast<char*>(buf.data()) + whole * sizeof(Record), have - whole * sizeof(Record));
      have -= whole * sizeof(Record);
      if (r == 0) break;
    }
    ::close(fd);
    if (have != 0) throw Error(ErrorCode::Format, path + " ends in the middle of a record");
    rep.largest_bucket = std::max(rep.largest_bucket, static_cast<int64_t>(first_pos.size()));
    first_pos = {};
    fs::remove(path, ec);
  }

  // Step 3.
  int64_t next = 1;
  for (int64_t p = 0; p < total; ++p) {
    const int64_t x = v[p];
    if (x == kFirst) {
      v[p] = next++;
    } else if (x == kFailed) {
      v[p] = 0;
    } else {
      const int64_t id = x - 1 < p ? v[x - 1] : 0;
      if (id <= 0) throw Error(ErrorCode::Internal, "id pass: the duplicate at position " + std::to_string(p) + " points at no first appearance");
      v[p] = -id;
    }
  }
  rep.items = next - 1;
  for (int i = 0; i < s.n; ++i) {
    const ShardMeta& m = s.metas[static_cast<size_t>(i)];
    write_file_atomic(ids_path(dir, i, s.n), v + m.first, static_cast<size_t>(m.count) * sizeof(int64_t));
  }
  map.reset();
  fs::remove_all(scratch, ec);
  return rep;
}

}  // namespace clipkit::dist
