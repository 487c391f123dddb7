// Small Unicode property tables that utf8proc does not expose directly.
#pragma once
#include <cstddef>
#include <cstdint>

namespace clipkit::text {

struct CaseRange {
  uint32_t first, last;
  uint8_t kind;  // 1 = Case_Ignorable, 2 = Cased (and not Case_Ignorable)
};
extern const CaseRange kSigmaCaseRanges[];
extern const size_t kSigmaCaseRangeCount;

// 0 = neither, 1 = case-ignorable, 2 = cased.
int sigma_case_kind(char32_t c);

}  // namespace clipkit::text
