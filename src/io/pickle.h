// A restricted unpickler for PyTorch archives. It understands the opcodes that torch.save and
// TorchScript emit (protocols 2-5) and builds an inert object graph. Only a whitelist of globals
// is accepted (tensor rebuild functions, torch storage types, collections.OrderedDict, and - for
// TorchScript archives - the `__torch__.*` module classes, which become plain attribute holders);
// nothing from the file is ever executed or imported.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace clipkit::pickle {

enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Object, Storage, Tensor };
const char* kind_name(Kind k);

struct Node {
  Kind kind = Kind::None;
  int64_t i = 0;                                // Bool, Int
  double f = 0;                                 // Float
  std::string s;                                // Str, Bytes; Storage: key
  std::string module, name;                     // Global; Object: its class
  std::vector<Node*> items;                     // Tuple, List
  std::vector<std::pair<Node*, Node*>> dict;    // Dict (insertion order)
  Node* state = nullptr;                        // Object: BUILD state
  // Storage: element type and the element count recorded in the persistent id.
  DType dtype = DType::F32;
  int64_t numel = 0;
  // Tensor: a view of `storage`.
  Node* storage = nullptr;
  int64_t offset = 0;
  Shape shape;
  std::vector<int64_t> stride;
  // Containers: levels of containers below this one (0 for a leaf), as seen when items were
  // added. unpickle() rejects graphs deeper than kMaxDepth.
  uint32_t depth = 0;

  // Dict lookup by string key; nullptr when absent (or not a Dict).
  const Node* get(const std::string& key) const;
};

struct Options {
  bool allow_torchscript_classes = false;  // accept `__torch__.*` globals (NEWOBJ -> Object)
};

// Owns every node of one unpickled graph.
class Graph {
 public:
  Node* root = nullptr;
  Node* make(Kind k);

 private:
  std::vector<std::unique_ptr<Node>> arena_;
};

// Limits on what one pickle may build (a malicious file errors out early, in bounded memory):
// objects plus container items, container nesting (and MARK nesting), stack entries and memo
// entries.
inline constexpr uint64_t kMaxObjects = uint64_t{1} << 20;
inline constexpr uint32_t kMaxDepth = 1000;

// Runs the pickle program. `where` names the file (and entry) in error messages, which also give
// the byte offset and the opcode at fault. Throws Error(Format).
std::unique_ptr<Graph> unpickle(const uint8_t* data, size_t size, const std::string& where, const Options& options = {});

}  // namespace clipkit::pickle
