// libFuzzer target: SentencePiece model files through SentencePieceTokenizer (XLM-R's tokenizer).
//   The input is a model file followed by a text and the text's length in the last byte (at most
//   63). The model is loaded (from a file, as users load one); when it loads, the text and a few
//   fixed ones are encoded plainly and as open_clip does. Loading either succeeds or throws
//   clipkit::Error; every id is within the vocabulary, and open_clip rows have their length.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "clipkit/error.h"
#include "clipkit/sentencepiece_tokenizer.h"

namespace {

// A file holding `bytes`, named by a /proc path (memfd: nothing touches the disk).
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) : fd_(memfd_create("model", MFD_CLOEXEC)) {
    if (fd_ < 0) __builtin_trap();
    size_t done = 0;
    while (done < size) {
      const ssize_t n = write(fd_, data + done, size - done);
      if (n <= 0) __builtin_trap();
      done += static_cast<size_t>(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { close(fd_); }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

void check(const clipkit::SentencePieceTokenizer& tok, std::string_view text) {
  const std::vector<int32_t> ids = tok.encode(text);
  if (ids.size() < 2 || ids.front() != clipkit::SentencePieceTokenizer::kBos ||
      ids.back() != clipkit::SentencePieceTokenizer::kEos)
    __builtin_trap();
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
  const int ctx = 2 + static_cast<int>(text.size() % 20);
  const std::vector<int32_t> row = tok.encode_openclip(text, ctx);
  if (row.size() != static_cast<size_t>(ctx)) __builtin_trap();
  for (int32_t id : row)
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t text_size = std::min<size_t>(data[size - 1] % 64, size - 1);
  const size_t model_size = size - 1 - text_size;
  const std::string_view text(reinterpret_cast<const char*>(data) + model_size, text_size);
  const MemFile file(data, model_size);
  std::shared_ptr<const clipkit::SentencePieceTokenizer> tok;
  try {
    tok = clipkit::SentencePieceTokenizer::load(file.path());
  } catch (const clipkit::Error&) {
    return 0;
  }
  if (tok->vocab_size() < 6) __builtin_trap();  // at least 4 pieces, plus <pad> and <mask>
  try {
    check(*tok, text);
    for (std::string_view fixed : {"a cat", "  eine   Katze <mask> </s>", "\xe7\x8c\xab \xc3\xa9t\xc3\xa9 &amp; \xff"})
      check(*tok, fixed);
  } catch (const clipkit::Error& e) {
    // A model that loads but cannot cut some text must say so about the model, as a format error.
    if (e.code() != clipkit::ErrorCode::Format) __builtin_trap();
  }
  return 0;
}
