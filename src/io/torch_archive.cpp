#include "io/torch_archive.h"

#include <cstring>
#include <set>
#include <unordered_map>

#include "clipkit/error.h"
#include "io/pickle.h"
#include "io/zip.h"

namespace clipkit {

namespace {

using pickle::Kind;
using pickle::Node;

struct Collector {
  const std::string& path;
  std::vector<std::pair<std::string, const Node*>> found;
  std::set<const Node*> visiting;

  [[noreturn]] void fail(const std::string& why) const {
    throw Error(ErrorCode::Format, "unsupported PyTorch archive '" + path + "': " + why);
  }

  // TorchScript: every module object's BUILD state is a dict of attributes; submodules are
  // objects themselves. Parameters and buffers are the tensor-valued attributes.
  size_t visits = 0;

  void walk_module(const Node* obj, const std::string& prefix, int depth) {
    if (depth > 200) fail("module tree is nested more than 200 levels deep");
    if (++visits > (1u << 20)) fail("module tree has more than 2^20 modules (shared submodules?)");
    if (!visiting.insert(obj).second) fail("module tree contains a cycle at '" + prefix + "'");
    const Node* st = obj->state;
    if (st && st->kind == Kind::Dict) {
      for (const auto& [k, v] : st->dict) {
        if (k->kind != Kind::Str) continue;
        if (v->kind == Kind::Tensor) found.emplace_back(prefix + k->s, v);
        else if (v->kind == Kind::Object) walk_module(v, prefix + k->s + ".", depth + 1);
      }
    }
    visiting.erase(obj);
  }

  void walk_state_dict(const Node* d) {
    for (const auto& [k, v] : d->dict) {
      if (k->kind != Kind::Str) fail("state dict has a " + std::string(pickle::kind_name(k->kind)) + " key");
      if (v->kind == Kind::Tensor) found.emplace_back(k->s, v);
    }
  }
};

bool checked_mul(int64_t a, int64_t b, int64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

// Materialises one pickled tensor view against its storage bytes.
Tensor make_tensor(const std::string& path, const std::string& name, const Node* t, const uint8_t* bytes,
                   size_t nbytes, const std::shared_ptr<const void>& owner, bool mapped) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::Format, "invalid PyTorch archive '" + path + "': tensor '" + name + "' " + why);
  };
  const Node* st = t->storage;
  const size_t es = dtype_size(st->dtype);
  const int64_t storage_elems = static_cast<int64_t>(nbytes / es);
  if (st->numel > storage_elems)
    throw bad("uses storage '" + st->s + "' of " + std::to_string(st->numel) + " elements, but the archive holds only " +
              std::to_string(nbytes) + " bytes for it (truncated?)");
  if (t->offset < 0) throw bad("has a negative storage offset");
  int64_t numel = 1, last = t->offset;  // index of the last element touched
  for (size_t d = 0; d < t->shape.size(); ++d) {
    if (t->shape[d] < 0 || t->stride[d] < 0)
      throw bad("has size " + shape_str(t->shape) + " / stride " + shape_str(t->stride) + " with negative entries");
    if (!checked_mul(numel, t->shape[d], numel)) throw bad("has a size " + shape_str(t->shape) + " that overflows");
  }
  if (numel > 0) {
    for (size_t d = 0; d < t->shape.size(); ++d) {
      int64_t span;
      if (!checked_mul(t->shape[d] - 1, t->stride[d], span) || __builtin_add_overflow(last, span, &last))
        throw bad("has a stride " + shape_str(t->stride) + " that overflows");
    }
    if (last >= storage_elems)
      throw bad("with offset " + std::to_string(t->offset) + ", size " + shape_str(t->shape) + " and stride " +
                shape_str(t->stride) + " reaches element " + std::to_string(last) + " of a storage with " +
                std::to_string(storage_elems) + " elements");
  }
  // Overlapping views (stride 0, i.e. expand()) could blow up on copy: bound them.
  if (numel > 16 * std::max<int64_t>(storage_elems, 1) + 1024)
    throw bad("has " + std::to_string(numel) + " elements but its storage only " + std::to_string(storage_elems));
  Tensor out;
  out.dtype = st->dtype;
  out.shape = t->shape;
  bool contiguous = true;
  int64_t expect = 1;
  for (size_t d = t->shape.size(); d-- > 0;) {
    if (t->shape[d] != 1 && t->stride[d] != expect) contiguous = false;
    expect *= t->shape[d];
  }
  if (numel == 0) {
    out.data = bytes;
    out.owner = owner;
    return out;
  }
  const uint8_t* base = bytes + static_cast<size_t>(t->offset) * es;  // offset < storage_elems here
  if (contiguous && reinterpret_cast<uintptr_t>(base) % es == 0) {
    out.data = base;
    out.owner = owner;
    out.mapped = mapped;
    return out;
  }
  // Gather into a fresh contiguous buffer (row-major over the logical shape).
  std::vector<uint8_t> buf(static_cast<size_t>(numel) * es);
  const size_t rank = t->shape.size();
  std::vector<int64_t> idx(rank, 0);
  for (int64_t i = 0; i < numel; ++i) {
    int64_t src = 0;
    for (size_t d = 0; d < rank; ++d) src += idx[d] * t->stride[d];
    std::memcpy(buf.data() + static_cast<size_t>(i) * es, base + static_cast<size_t>(src) * es, es);
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < t->shape[d]) break;
      idx[d] = 0;
    }
  }
  return Tensor::from_bytes(st->dtype, t->shape, std::move(buf));
}

}  // namespace

TorchArchive read_torch_archive(const std::string& path) {
  ZipArchive zip = ZipArchive::open(path);
  // The records live under one top-level folder (named after the file, or "archive").
  std::string prefix;
  bool have_pkl = false;
  for (const auto& e : zip.entries()) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      prefix = e.name.substr(0, slash + 1);
      have_pkl = true;
      break;
    }
  }
  if (!have_pkl) {
    if (zip.find("data.pkl")) {
      have_pkl = true;  // no folder at all
    } else {
      throw Error(ErrorCode::Format, "unsupported checkpoint '" + path +
                                         "': a zip archive without a <name>/data.pkl record (not a PyTorch archive)");
    }
  }
  TorchArchive out;
  for (const auto& e : zip.entries())
    if (e.name == prefix + "constants.pkl" || e.name.rfind(prefix + "code/", 0) == 0) out.torchscript = true;

  const ZipEntry* pkl_entry = zip.find(prefix + "data.pkl");
  ZipBlob pkl = zip.read(*pkl_entry, /*verify_crc=*/true);
  pickle::Options opt;
  opt.allow_torchscript_classes = out.torchscript;
  auto graph = pickle::unpickle(pkl.data, pkl.size, path + ":" + pkl_entry->name, opt);

  Collector col{path, {}, {}, 0};
  const Node* root = graph->root;
  if (out.torchscript) {
    if (root->kind != Kind::Object)
      col.fail("TorchScript data.pkl holds a " + std::string(pickle::kind_name(root->kind)) + ", expected a module");
    col.walk_module(root, "", 0);
  } else {
    if (root->kind != Kind::Dict)
      col.fail("data.pkl holds a " + std::string(pickle::kind_name(root->kind)) + ", expected a state dict");
    const Node* inner = root->get("state_dict");
    if (inner && inner->kind == Kind::Dict) root = inner;
    col.walk_state_dict(root);
  }
  if (col.found.empty()) col.fail("no tensors found in " + prefix + "data.pkl");

  std::unordered_map<std::string, ZipBlob> storages;
  for (const auto& [raw_name, node] : col.found) {
    const Node* st = node->storage;
    auto it = storages.find(st->s);
    if (it == storages.end()) {
      const ZipEntry* e = zip.find(prefix + "data/" + st->s);
      if (!e)
        throw Error(ErrorCode::Format, "invalid PyTorch archive '" + path + "': tensor '" + raw_name + "' uses storage '" +
                                           prefix + "data/" + st->s + "', which the archive lacks");
      it = storages.emplace(st->s, zip.read(*e)).first;
    }
    std::string name = raw_name;
    if (name.rfind("module.", 0) == 0) name = name.substr(7);
    Tensor t = make_tensor(path, raw_name, node, it->second.data, it->second.size, it->second.owner,
                           it->second.mapped);
    // TorchScript CLIP archives keep input_resolution/context_length/vocab_size as top-level int
    // buffers; they are not part of the model's state_dict, so keep them as metadata only.
    if (out.torchscript && t.shape.empty() && t.dtype == DType::I64 &&
        (name == "input_resolution" || name == "context_length" || name == "vocab_size")) {
      int64_t v;
      std::memcpy(&v, t.data, 8);
      out.metadata[name] = std::to_string(v);
      continue;
    }
    if (!out.tensors.emplace(name, std::move(t)).second)
      throw Error(ErrorCode::Format, "invalid PyTorch archive '" + path + "': tensor '" + name + "' appears twice");
  }
  return out;
}

}  // namespace clipkit
