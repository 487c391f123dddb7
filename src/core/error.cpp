#include "clipkit/error.h"

namespace clipkit {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument: return "invalid argument";
    case ErrorCode::NotFound: return "not found";
    case ErrorCode::Io: return "i/o error";
    case ErrorCode::Format: return "format error";
    case ErrorCode::Shape: return "shape error";
    case ErrorCode::Limit: return "limit exceeded";
    case ErrorCode::Mismatch: return "mismatch";
    case ErrorCode::Internal: return "internal error";
  }
  return "error";
}

}  // namespace clipkit
