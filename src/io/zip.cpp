#include "io/zip.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "clipkit/error.h"

namespace clipkit {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50;
constexpr uint32_t kEnd64LocatorSig = 0x07064b50;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) { return static_cast<uint64_t>(rd32(p)) | (static_cast<uint64_t>(rd32(p + 4)) << 32); }

}  // namespace

bool looks_like_zip(const uint8_t* data, size_t size) {
  if (size < 4) return false;
  const uint32_t sig = rd32(data);
  return sig == kLocalSig || sig == kEndSig;
}

ZipArchive ZipArchive::open(const std::string& path) { return open(MappedFile::open(path)); }

ZipArchive ZipArchive::open(std::shared_ptr<const MappedFile> file) {
  ZipArchive z;
  z.file_ = std::move(file);
  const std::string& path = z.file_->path();
  const uint8_t* d = z.file_->data();
  const uint64_t n = z.file_->size();
  auto bad = [&](const std::string& why) { return Error(ErrorCode::Format, "invalid zip archive '" + path + "': " + why); };

  // End of central directory: 22 bytes plus a comment of up to 65535 bytes, at the very end.
  if (n < 22) throw bad("file is too short (" + std::to_string(n) + " bytes) to hold an end-of-central-directory record (truncated?)");
  uint64_t eocd = std::numeric_limits<uint64_t>::max();
  const uint64_t lowest = n >= 22 + 65535 ? n - 22 - 65535 : 0;
  for (uint64_t pos = n - 22 + 1; pos-- > lowest;) {
    if (rd32(d + pos) == kEndSig && pos + 22 + rd16(d + pos + 20) == n) {
      eocd = pos;
      break;
    }
  }
  if (eocd == std::numeric_limits<uint64_t>::max())
    throw bad("no end-of-central-directory record found (truncated or not a zip file)");
  const uint8_t* e = d + eocd;
  if (rd16(e + 4) != 0 || rd16(e + 6) != 0) throw bad("multi-disk archives are not supported");
  uint64_t count = rd16(e + 10);
  uint64_t cd_size = rd32(e + 12);
  uint64_t cd_offset = rd32(e + 16);
  if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
    // zip64: a locator sits just before the classic record and points at the zip64 record.
    if (eocd < 20 || rd32(d + eocd - 20) != kEnd64LocatorSig) throw bad("zip64 end-of-central-directory locator missing");
    const uint64_t rec = rd64(d + eocd - 20 + 8);
    if (rec > eocd - 20 || eocd - 20 - rec < 56 || rd32(d + rec) != kEnd64Sig)
      throw bad("zip64 end-of-central-directory record is missing or out of bounds");
    count = rd64(d + rec + 32);
    cd_size = rd64(d + rec + 40);
    cd_offset = rd64(d + rec + 48);
  }
  if (cd_offset > eocd || cd_size > eocd - cd_offset)
    throw bad("central directory [" + std::to_string(cd_offset) + ", +" + std::to_string(cd_size) +
              ") lies outside the file (truncated?)");
  if (count > cd_size / 46) throw bad("central directory claims " + std::to_string(count) + " entries in " +
                                      std::to_string(cd_size) + " bytes");
  z.entries_.reserve(static_cast<size_t>(count));
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - pos < 46 || rd32(d + pos) != kCentralSig)
      throw bad("central directory entry " + std::to_string(i) + " has a bad signature or is cut short");
    const uint8_t* c = d + pos;
    ZipEntry en;
    en.flags = rd16(c + 8);
    en.method = rd16(c + 10);
    en.crc32 = rd32(c + 16);
    en.compressed_size = rd32(c + 20);
    en.size = rd32(c + 24);
    const uint16_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
    const uint16_t disk = rd16(c + 34);
    en.local_header_offset = rd32(c + 42);
    if (cd_end - pos - 46 < static_cast<uint64_t>(name_len) + extra_len + comment_len)
      throw bad("central directory entry " + std::to_string(i) + " runs past the directory");
    en.name.assign(reinterpret_cast<const char*>(c + 46), name_len);
    // zip64 extended information: only the fields saturated in the fixed part are present, in order.
    const uint8_t* x = c + 46 + name_len;
    const uint8_t* x_end = x + extra_len;
    while (x_end - x >= 4) {
      const uint16_t id = rd16(x), len = rd16(x + 2);
      if (x_end - x - 4 < len) throw bad("entry '" + en.name + "' has a malformed extra field");
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        uint16_t left = len;
        auto take = [&](uint64_t& v) {
          if (v != 0xFFFFFFFFu) return;
          if (left < 8) throw bad("entry '" + en.name + "' has a short zip64 extra field");
          v = rd64(f);
          f += 8;
          left = static_cast<uint16_t>(left - 8);
        };
        take(en.size);
        take(en.compressed_size);
        take(en.local_header_offset);
      }
      x += 4 + len;
    }
    if (disk != 0 && disk != 0xFFFF) throw bad("entry '" + en.name + "' lives on another disk (multi-disk archive)");
    z.entries_.push_back(std::move(en));
    pos += 46 + static_cast<uint64_t>(name_len) + extra_len + comment_len;
  }
  return z;
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

ZipBlob ZipArchive::read(const ZipEntry& en, bool verify_crc) const {
  const std::string& p = path();
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::Format, "invalid zip archive '" + p + "': entry '" + en.name + "' " + why);
  };
  const uint8_t* d = file_->data();
  const uint64_t n = file_->size();
  if (en.flags & 0x1) throw bad("is encrypted");
  if (en.local_header_offset > n || n - en.local_header_offset < 30 || rd32(d + en.local_header_offset) != kLocalSig)
    throw bad("has no local header at offset " + std::to_string(en.local_header_offset) + " (truncated or corrupt?)");
  const uint8_t* lh = d + en.local_header_offset;
  const uint64_t data_off = en.local_header_offset + 30 + rd16(lh + 26) + rd16(lh + 28);
  if (data_off > n || en.compressed_size > n - data_off)
    throw bad("data [" + std::to_string(data_off) + ", +" + std::to_string(en.compressed_size) +
              ") runs past the end of the " + std::to_string(n) + "-byte file (truncated?)");
  const uint8_t* src = d + data_off;
  ZipBlob out;
  if (en.method == 0) {
    if (en.compressed_size != en.size)
      throw bad("is stored but its sizes differ (" + std::to_string(en.compressed_size) + " vs " +
                std::to_string(en.size) + ")");
    out.data = src;
    out.size = static_cast<size_t>(en.size);
    out.owner = file_;
    out.mapped = true;
    if (verify_crc) {
      uLong crc = crc32(0L, Z_NULL, 0);
      uint64_t done = 0;
      while (done < en.size) {
        const uInt chunk = static_cast<uInt>(std::min<uint64_t>(en.size - done, 1u << 30));
        crc = crc32(crc, src + done, chunk);
        done += chunk;
      }
      if (static_cast<uint32_t>(crc) != en.crc32) throw bad("fails its CRC-32 check (corrupt data)");
    }
    return out;
  }
  if (en.method != 8)
    throw bad("uses compression method " + std::to_string(en.method) + " (only stored and deflated are supported)");
  // Inflated size comes from the directory; refuse absurd ratios before allocating.
  if (en.size > en.compressed_size * 1100 + 1024)
    throw bad("claims an implausible uncompressed size " + std::to_string(en.size));
  auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(en.size));
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) throw Error(ErrorCode::Internal, "zlib inflateInit2 failed");
  uint64_t in_done = 0, out_done = 0;
  int rc = Z_OK;
  while (rc == Z_OK) {  // Z_BUF_ERROR (no progress possible) or an error ends the loop
    const uInt in_chunk = static_cast<uInt>(std::min<uint64_t>(en.compressed_size - in_done, 1u << 30));
    const uInt out_chunk = static_cast<uInt>(std::min<uint64_t>(en.size - out_done, 1u << 30));
    zs.next_in = const_cast<Bytef*>(src + in_done);
    zs.avail_in = in_chunk;
    zs.next_out = buf->data() + out_done;
    zs.avail_out = out_chunk;
    rc = inflate(&zs, Z_NO_FLUSH);
    in_done += in_chunk - zs.avail_in;
    out_done += out_chunk - zs.avail_out;
  }
  inflateEnd(&zs);
  if (rc != Z_STREAM_END || out_done != en.size)
    throw bad("could not be inflated (corrupt deflate stream or wrong sizes)");
  uLong crc = crc32(0L, Z_NULL, 0);
  uint64_t done = 0;
  while (done < en.size) {
    const uInt chunk = static_cast<uInt>(std::min<uint64_t>(en.size - done, 1u << 30));
    crc = crc32(crc, buf->data() + done, chunk);
    done += chunk;
  }
  if (static_cast<uint32_t>(crc) != en.crc32) throw bad("fails its CRC-32 check (corrupt data)");
  out.data = buf->data();
  out.size = buf->size();
  out.owner = std::shared_ptr<const void>(buf, buf->data());
  return out;
}

}  // namespace clipkit
