// A hook into the decoders for callers that account for decoding memory (the server's budget):
// while a ScopedDimensionHook lives, every image decoded on its thread reports its width and
// height to it once the header has been read and the size accepted, before any pixel is
// allocated (more than once for files whose size is learnt in steps, such as animations). The
// hook may throw to stop the decoding; the exception leaves the decode call unchanged.
#pragma once
#include <cstdint>
#include <functional>

namespace clipkit::vision {

class ScopedDimensionHook {
 public:
  explicit ScopedDimensionHook(std::function<void(int64_t width, int64_t height)> hook);
  ~ScopedDimensionHook();
  ScopedDimensionHook(const ScopedDimensionHook&) = delete;
  ScopedDimensionHook& operator=(const ScopedDimensionHook&) = delete;

 private:
  std::function<void(int64_t, int64_t)> hook_;
  const std::function<void(int64_t, int64_t)>* previous_;
};

}  // namespace clipkit::vision
