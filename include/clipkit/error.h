// clipkit/error.h — the one exception type the library throws.
//
//   try { auto m = clipkit::Model::load("ViT-B-32.pt"); }
//   catch (const clipkit::Error& e) { std::cerr << e.what() << "\n"; }   // one line naming the problem
//
// The library never prints or exits; every failure is an Error with a code and a message that
// names the file, tensor or field at fault.
#pragma once
#include <stdexcept>
#include <string>

namespace clipkit {

enum class ErrorCode {
  InvalidArgument,   // bad option or parameter value
  NotFound,          // file, tensor, label or model not found
  Io,                // read/write failure
  Format,            // corrupt or unsupported file content (image, checkpoint, index, JSON)
  Shape,             // tensor shape/dtype mismatch
  Limit,             // input above a configured limit (pixels, upload size, text length)
  Mismatch,          // object built for another model (classifier, index)
  Internal,
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace clipkit
