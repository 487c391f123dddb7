// libFuzzer target: search expressions ("image:a.jpg + 0.5*text:at sunset - like:#3") through
// parse_query and build_query. A parse either gives finite weights and non-empty values or throws
// clipkit::Error(InvalidArgument).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "clipkit/error.h"
#include "clipkit/index.h"
#include "clipkit/search_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string expr(reinterpret_cast<const char*>(data), size);
  try {
    const clipkit::Query q = clipkit::parse_query(expr);
    if (q.terms.empty()) __builtin_trap();
    for (const auto& t : q.terms)
      if (t.value.empty() || !std::isfinite(t.weight)) __builtin_trap();
  } catch (const clipkit::Error& e) {
    if (e.code() != clipkit::ErrorCode::InvalidArgument) __builtin_trap();
  }
  try {
    clipkit::SearchRequest r;
    r.expression = expr;
    r.texts = {expr};
    (void)clipkit::build_query(r);
  } catch (const clipkit::Error&) {
  }
  return 0;
}
