// Test-only writers for the containers the checkpoint loader reads: a pickle encoder for the few
// opcodes torch.save emits and a zip writer (stored or deflated entries, optional zip64 records,
// 64-byte data alignment like PyTorch's writer). Written from the format specifications, they let
// the tests build torch.save archives (and corrupt variants) from the safetensors fixtures.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace iotest {

inline void put_le(std::string& b, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

struct Pickler {
  std::string b;
  Pickler() { b += "\x80\x02"; }  // PROTO 2
  void op(char c) { b.push_back(c); }
  void global(const std::string& mod, const std::string& name) { b += "c" + mod + "\n" + name + "\n"; }
  void str(const std::string& s) {
    b.push_back('X');
    put_le(b, s.size(), 4);
    b += s;
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      b.push_back('K');
      put_le(b, static_cast<uint64_t>(v), 1);
    } else if (v >= 0 && v < 65536) {
      b.push_back('M');
      put_le(b, static_cast<uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      b.push_back('J');
      put_le(b, static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
    } else {
      b += "\x8a\x08";  // LONG1, 8 bytes
      put_le(b, static_cast<uint64_t>(v), 8);
    }
  }
  void boolean(bool v) { b.push_back(v ? '\x88' : '\x89'); }
  void int_tuple(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    op('t');
  }
  // torch._utils._rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())
  void tensor(const std::string& storage_type, const std::string& key, int64_t numel, int64_t offset,
              const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');
    str("storage");
    global("torch", storage_type);
    str(key);
    str("cpu");
    integer(numel);
    op('t');
    op('Q');  // BINPERSID
    integer(offset);
    int_tuple(size);
    int_tuple(stride);
    boolean(false);
    global("collections", "OrderedDict");
    op(')');
    op('R');
    op('t');
    op('R');
  }
  void ordered_dict() {
    global("collections", "OrderedDict");
    op(')');
    op('R');
  }
};

struct ZipEntryIn {
  std::string name;
  std::string data;
  bool deflate = false;
};

inline std::string deflate_raw(const std::string& in) {
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, static_cast<uLong>(in.size())) + 16, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

inline std::string write_zip(const std::vector<ZipEntryIn>& entries, bool zip64 = false) {
  std::string z, cd;
  for (const auto& e : entries) {
    const std::string payload = e.deflate ? deflate_raw(e.data) : e.data;
    const uint32_t crc = static_cast<uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(e.data.data()), static_cast<uInt>(e.data.size())));
    const uint64_t offset = z.size();
    // Pad the local header's extra field so that the data starts at a multiple of 64.
    size_t pad = (64 - (z.size() + 30 + e.name.size() + 4) % 64) % 64;
    std::string extra;
    put_le(extra, 0x4b50 + 1, 2);  // private padding id
    put_le(extra, pad, 2);
    extra.append(pad, 'Z');
    std::string lh;
    put_le(lh, 0x04034b50, 4);
    put_le(lh, zip64 ? 45 : 20, 2);
    put_le(lh, 0, 2);
    put_le(lh, e.deflate ? 8 : 0, 2);
    put_le(lh, 0, 2);
    put_le(lh, 0x21, 2);
    put_le(lh, crc, 4);
    put_le(lh, payload.size(), 4);
    put_le(lh, e.data.size(), 4);
    put_le(lh, e.name.size(), 2);
    put_le(lh, extra.size(), 2);
    z += lh + e.name + extra + payload;
    std::string c;
    put_le(c, 0x02014b50, 4);
    put_le(c, zip64 ? 45 : 20, 2);
    put_le(c, zip64 ? 45 : 20, 2);
    put_le(c, 0, 2);
    put_le(c, e.deflate ? 8 : 0, 2);
    put_le(c, 0, 2);
    put_le(c, 0x21, 2);
    put_le(c, crc, 4);
    std::string x64;
    if (zip64) {
      put_le(x64, 0x0001, 2);
      put_le(x64, 24, 2);
      put_le(x64, e.data.size(), 8);
      put_le(x64, payload.size(), 8);
      put_le(x64, offset, 8);
    }
    put_le(c, zip64 ? 0xFFFFFFFFu : payload.size(), 4);
    put_le(c, zip64 ? 0xFFFFFFFFu : e.data.size(), 4);
    put_le(c, e.name.size(), 2);
    put_le(c, x64.size(), 2);
    put_le(c, 0, 2);
    put_le(c, 0, 2);
    put_le(c, 0, 2);
    put_le(c, 0, 4);
    put_le(c, zip64 ? 0xFFFFFFFFu : offset, 4);
    cd += c + e.name + x64;
  }
  const uint64_t cd_off = z.size();
  z += cd;
  if (zip64) {
    const uint64_t rec = z.size();
    put_le(z, 0x06064b50, 4);
    put_le(z, 44, 8);
    put_le(z, 45, 2);
    put_le(z, 45, 2);
    put_le(z, 0, 4);
    put_le(z, 0, 4);
    put_le(z, entries.size(), 8);
    put_le(z, entries.size(), 8);
    put_le(z, cd.size(), 8);
    put_le(z, cd_off, 8);
    put_le(z, 0x07064b50, 4);
    put_le(z, 0, 4);
    put_le(z, rec, 8);
    put_le(z, 1, 4);
  }
  put_le(z, 0x06054b50, 4);
  put_le(z, 0, 2);
  put_le(z, 0, 2);
  put_le(z, zip64 ? 0xFFFF : entries.size(), 2);
  put_le(z, zip64 ? 0xFFFF : entries.size(), 2);
  put_le(z, zip64 ? 0xFFFFFFFFu : cd.size(), 4);
  put_le(z, zip64 ? 0xFFFFFFFFu : cd_off, 4);
  put_le(z, 0, 2);
  return z;
}

}  // namespace iotest
