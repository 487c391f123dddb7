#include "io/pickle.h"

#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "clipkit/error.h"

namespace clipkit::pickle {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Object: return "object";
    case Kind::Storage: return "storage";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

const Node* Node::get(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (const auto& [k, v] : dict)
    if (k->kind == Kind::Str && k->s == key) return v;
  return nullptr;
}

Node* Graph::make(Kind k) {
  arena_.push_back(std::make_unique<Node>());
  arena_.back()->kind = k;
  return arena_.back().get();
}

namespace {

// Storage classes that torch pickles (torch.<Name>Storage) and their element types.
bool storage_dtype(const std::string& name, DType& out) {
  static const std::pair<const char*, DType> table[] = {
      {"FloatStorage", DType::F32}, {"HalfStorage", DType::F16}, {"BFloat16Storage", DType::BF16},
      {"DoubleStorage", DType::F64}, {"LongStorage", DType::I64}, {"IntStorage", DType::I32},
      {"ShortStorage", DType::I16},  {"CharStorage", DType::I8},  {"ByteStorage", DType::U8},
      {"BoolStorage", DType::Bool},
  };
  for (const auto& [n, d] : table)
    if (name == n) {
      out = d;
      return true;
    }
  return false;
}

// Callables evaluated by REDUCE / NEWOBJ (by our own code, never by name lookup into the file).
enum class Fn { None, OrderedDict, RebuildTensorV2, RebuildTensor, RebuildParameter, RebuildParameterWithState,
                RebuildFromTypeV2, TorchSize, TorchClass, StorageType, TensorType };

Fn classify(const std::string& module, const std::string& name, const Options& opt) {
  if (module == "collections" && name == "OrderedDict") return Fn::OrderedDict;
  if (module == "torch._utils") {
    if (name == "_rebuild_tensor_v2") return Fn::RebuildTensorV2;
    if (name == "_rebuild_tensor") return Fn::RebuildTensor;
    if (name == "_rebuild_parameter") return Fn::RebuildParameter;
    if (name == "_rebuild_parameter_with_state") return Fn::RebuildParameterWithState;
  }
  if (module == "torch._tensor" && name == "_rebuild_from_type_v2") return Fn::RebuildFromTypeV2;
  if (module == "torch" && name == "Size") return Fn::TorchSize;
  if ((module == "torch" && name == "Tensor") || (module == "torch.nn.parameter" && name == "Parameter"))
    return Fn::TensorType;
  DType d;
  if (module == "torch" && storage_dtype(name, d)) return Fn::StorageType;
  if (opt.allow_torchscript_classes && module.rfind("__torch__.", 0) == 0) return Fn::TorchClass;
  return Fn::None;
}

class Machine {
 public:
  Machine(const uint8_t* data, size_t size, const std::string& where, const Options& opt)
      : p_(data), n_(size), where_(where), opt_(opt), g_(std::make_unique<Graph>()) {}

  std::unique_ptr<Graph> run() {
    while (true) {
      if (pos_ >= n_) fail("ends without a STOP opcode (truncated?)");
      op_pos_ = pos_;
      op_ = p_[pos_++];
      if (step()) break;
    }
    if (stack_.size() != 1) fail("STOP with " + std::to_string(stack_.size()) + " values on the stack, expected 1");
    g_->root = stack_.back();
    return std::move(g_);
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    char buf[64];
    std::snprintf(buf, sizeof buf, " (opcode 0x%02x at byte %zu)", op_, op_pos_);
    throw Error(ErrorCode::Format, "invalid pickle in '" + where_ + "': " + why + buf);
  }

  const uint8_t* take(size_t k) {
    if (n_ - pos_ < k) fail("is truncated: needs " + std::to_string(k) + " more bytes");
    const uint8_t* r = p_ + pos_;
    pos_ += k;
    return r;
  }
  uint64_t le(size_t k) {
    const uint8_t* b = take(k);
    uint64_t v = 0;
    for (size_t i = 0; i < k; ++i) v |= static_cast<uint64_t>(b[i]) << (8 * i);
    return v;
  }
  std::string line() {
    const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
    if (!nl) fail("has an unterminated text argument");
    const size_t len = static_cast<size_t>(static_cast<const uint8_t*>(nl) - (p_ + pos_));
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len + 1;
    return s;
  }
  std::string bytes(uint64_t len) {
    if (len > n_ - pos_) fail("has a string of " + std::to_string(len) + " bytes running past the end");
    const uint8_t* b = take(static_cast<size_t>(len));
    return std::string(reinterpret_cast<const char*>(b), static_cast<size_t>(len));
  }

  Node* pop() {
    if (stack_.size() <= base()) fail("pops from an empty stack");
    Node* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Node* top() {
    if (stack_.size() <= base()) fail("reads from an empty stack");
    return stack_.back();
  }
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Node* v) {
    if (stack_.size() >= kMaxStack) fail("stack grows beyond " + std::to_string(kMaxStack) + " entries");
    stack_.push_back(v);
  }
  std::vector<Node*> pop_mark() {
    if (marks_.empty()) fail("needs a MARK that is not there");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Node*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  // Every object and every item a container gains counts against kMaxObjects, so a small file
  // cannot make the graph (about 300 bytes an object) grow past a few hundred MB.
  void charge(uint64_t n) {
    objects_ += n;
    if (objects_ > kMaxObjects)
      fail("builds more than " + std::to_string(kMaxObjects) +
           " objects and container items (a checkpoint's state dict needs a few tens of thousands)");
  }
  Node* make(Kind k) {
    charge(1);
    return g_->make(k);
  }
  // A container holding `child` is one level deeper than it; nesting is bounded by kMaxDepth.
  void nest(Node* container, const Node* child) {
    if (child->depth + 1 > container->depth) container->depth = child->depth + 1;
    if (container->depth > kMaxDepth)
      fail("nests containers more than " + std::to_string(kMaxDepth) + " levels deep");
  }
  void nest_all(Node* container, const std::vector<Node*>& items) {
    charge(items.size());
    for (const Node* x : items) nest(container, x);
  }
  Node* make_int(int64_t v) {
    Node* x = make(Kind::Int);
    x->i = v;
    return x;
  }
  Node* make_str(Kind k, std::string s) {
    Node* x = make(k);
    x->s = std::move(s);
    return x;
  }
  Node* make_tuple(std::vector<Node*> items) {
    Node* t = make(Kind::Tuple);
    nest_all(t, items);
    t->items = std::move(items);
    return t;
  }
  void memo_put(uint64_t idx) {
    if (idx > kMaxMemo) fail("uses memo index " + std::to_string(idx) + " (too large)");
    if (memo_.size() >= kMaxMemo && memo_.find(static_cast<uint32_t>(idx)) == memo_.end())
      fail("stores more than " + std::to_string(kMaxMemo) + " memo entries");
    memo_[static_cast<uint32_t>(idx)] = top();
  }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(static_cast<uint32_t>(idx));
    if (idx > kMaxMemo || it == memo_.end()) fail("reads memo entry " + std::to_string(idx) + " that was never stored");
    push(it->second);
  }
  Node* global(const std::string& module, const std::string& name) {
    if (classify(module, name, opt_) == Fn::None)
      fail("refers to the disallowed global '" + module + "." + name +
           "' (only tensors, storages and plain containers are loaded; nothing is executed)");
    Node* gl = make(Kind::Global);
    gl->module = module;
    gl->name = name;
    return gl;
  }
  static std::string gname(const Node* g) { return g->module + "." + g->name; }

  std::vector<int64_t> int_tuple(const Node* t, const char* what) {
    if (t->kind != Kind::Tuple && t->kind != Kind::List) fail(std::string(what) + " is a " + kind_name(t->kind) + ", expected a tuple");
    std::vector<int64_t> v;
    for (const Node* x : t->items) {
      if (x->kind != Kind::Int) fail(std::string(what) + " holds a " + kind_name(x->kind) + ", expected ints");
      v.push_back(x->i);
    }
    return v;
  }

  Node* rebuild_tensor(const std::vector<Node*>& a, bool v2) {
    if (a.size() < 4) fail("calls a tensor rebuild function with " + std::to_string(a.size()) + " arguments, expected >= 4");
    if (a[0]->kind != Kind::Storage) fail("rebuilds a tensor from a " + std::string(kind_name(a[0]->kind)) + ", expected a storage");
    if (a[1]->kind != Kind::Int) fail("rebuilds a tensor with a non-integer storage offset");
    (void)v2;
    Node* t = make(Kind::Tensor);
    t->storage = a[0];
    t->offset = a[1]->i;
    t->shape = int_tuple(a[2], "tensor size");
    t->stride = int_tuple(a[3], "tensor stride");
    if (t->shape.size() != t->stride.size())
      fail("rebuilds a tensor whose size " + shape_str(t->shape) + " and stride " + shape_str(t->stride) + " differ in rank");
    return t;
  }

  Node* call(Node* fn, Node* args) {
    if (fn->kind != Kind::Global) fail("calls a " + std::string(kind_name(fn->kind)) + ", expected a whitelisted global");
    if (args->kind != Kind::Tuple) fail("calls '" + gname(fn) + "' with a " + kind_name(args->kind) + " instead of an argument tuple");
    const auto& a = args->items;
    switch (classify(fn->module, fn->name, opt_)) {
      case Fn::OrderedDict:
        if (!a.empty()) fail("calls collections.OrderedDict with arguments");
        return make(Kind::Dict);
      case Fn::RebuildTensorV2: return rebuild_tensor(a, true);
      case Fn::RebuildTensor: return rebuild_tensor(a, false);
      case Fn::RebuildParameter:
      case Fn::RebuildParameterWithState:
        if (a.empty() || a[0]->kind != Kind::Tensor) fail("calls '" + gname(fn) + "' without a tensor");
        return a[0];
      case Fn::RebuildFromTypeV2: {
        // (func, new_type, args, state): apply the (whitelisted) func to args; the type is ignored.
        if (a.size() < 3) fail("calls torch._tensor._rebuild_from_type_v2 with too few arguments");
        if (a[0]->kind == Kind::Global && classify(a[0]->module, a[0]->name, opt_) == Fn::RebuildFromTypeV2)
          fail("nests torch._tensor._rebuild_from_type_v2 calls");
        Node* r = call(a[0], a[2]);
        if (r->kind != Kind::Tensor) fail("torch._tensor._rebuild_from_type_v2 did not produce a tensor");
        return r;
      }
      case Fn::TorchSize:
        if (a.size() != 1) fail("calls torch.Size with " + std::to_string(a.size()) + " arguments");
        return make_tuple(std::vector<Node*>(a[0]->items));  // charged per item: repeated calls stay bounded
      default:
        fail("calls '" + gname(fn) + "', which cannot be called");
    }
  }

  // Returns true at STOP.
  bool step() {
    switch (op_) {
      case 0x80: {  // PROTO
        const uint64_t v = le(1);
        if (v < 2 || v > 5) fail("uses pickle protocol " + std::to_string(v) + " (supported: 2-5)");
        return false;
      }
      case 0x95: take(8); return false;  // FRAME (length is advisory)
      case '.': return true;             // STOP
      case '(':  // MARK
        if (marks_.size() >= kMaxDepth) fail("nests MARKs more than " + std::to_string(kMaxDepth) + " levels deep");
        marks_.push_back(stack_.size());
        return false;
      case 'N': push(make(Kind::None)); return false;
      case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
        Node* b = make(Kind::Bool);
        b->i = op_ == 0x88;
        push(b);
        return false;
      }
      case 'K': push(make_int(static_cast<int64_t>(le(1)))); return false;  // BININT1
      case 'M': push(make_int(static_cast<int64_t>(le(2)))); return false;  // BININT2
      case 'J': push(make_int(static_cast<int32_t>(static_cast<uint32_t>(le(4))))); return false;  // BININT
      case 0x8a: case 0x8b: {  // LONG1, LONG4
        const uint64_t len = le(op_ == 0x8a ? 1 : 4);
        if (len > 8) fail("holds a " + std::to_string(len) + "-byte integer (more than 64 bits)");
        uint64_t v = len ? le(static_cast<size_t>(len)) : 0;
        if (len > 0 && len < 8 && (v >> (8 * len - 1)) & 1) v |= ~uint64_t(0) << (8 * len);  // sign-extend
        push(make_int(static_cast<int64_t>(v)));
        return false;
      }
      case 'G': {  // BINFLOAT, big-endian IEEE double
        const uint8_t* b = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];
        Node* x = make(Kind::Float);
        std::memcpy(&x->f, &bits, 8);
        push(x);
        return false;
      }
      case 'X': push(make_str(Kind::Str, bytes(le(4)))); return false;       // BINUNICODE
      case 0x8c: push(make_str(Kind::Str, bytes(le(1)))); return false;      // SHORT_BINUNICODE
      case 0x8d: push(make_str(Kind::Str, bytes(le(8)))); return false;      // BINUNICODE8
      case 'U': push(make_str(Kind::Str, bytes(le(1)))); return false;       // SHORT_BINSTRING
      case 'T': push(make_str(Kind::Str, bytes(le(4)))); return false;       // BINSTRING
      case 'C': push(make_str(Kind::Bytes, bytes(le(1)))); return false;     // SHORT_BINBYTES
      case 'B': push(make_str(Kind::Bytes, bytes(le(4)))); return false;     // BINBYTES
      case 0x8e: push(make_str(Kind::Bytes, bytes(le(8)))); return false;    // BINBYTES8
      case ')': push(make(Kind::Tuple)); return false;                       // EMPTY_TUPLE
      case ']': push(make(Kind::List)); return false;                        // EMPTY_LIST
      case '}': push(make(Kind::Dict)); return false;                        // EMPTY_DICT
      case 't': push(make_tuple(pop_mark())); return false;                  // TUPLE
      case 0x85: case 0x86: case 0x87: {                                     // TUPLE1..3
        const size_t k = static_cast<size_t>(op_ - 0x84);
        if (stack_.size() < base() + k) fail("builds a tuple from too few stack values");
        std::vector<Node*> items(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
        stack_.resize(stack_.size() - k);
        push(make_tuple(std::move(items)));
        return false;
      }
      case 'l': {  // LIST
        Node* l = make(Kind::List);
        l->items = pop_mark();
        nest_all(l, l->items);
        push(l);
        return false;
      }
      case 'd': {  // DICT
        auto items = pop_mark();
        if (items.size() % 2) fail("builds a dict from an odd number of values");
        Node* d = make(Kind::Dict);
        nest_all(d, items);
        for (size_t i = 0; i < items.size(); i += 2) d->dict.emplace_back(items[i], items[i + 1]);
        push(d);
        return false;
      }
      case 'a': {  // APPEND
        Node* v = pop();
        Node* l = top();
        if (l->kind != Kind::List) fail("appends to a " + std::string(kind_name(l->kind)) + ", expected a list");
        charge(1);
        nest(l, v);
        l->items.push_back(v);
        return false;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        Node* l = top();
        if (l->kind != Kind::List) fail("appends to a " + std::string(kind_name(l->kind)) + ", expected a list");
        nest_all(l, items);
        l->items.insert(l->items.end(), items.begin(), items.end());
        return false;
      }
      case 's': {  // SETITEM
        Node* v = pop();
        Node* k = pop();
        Node* d = top();
        if (d->kind != Kind::Dict) fail("sets an item on a " + std::string(kind_name(d->kind)) + ", expected a dict");
        charge(2);
        nest(d, k);
        nest(d, v);
        d->dict.emplace_back(k, v);
        return false;
      }
      case 'u': {  // SETITEMS
        auto items = pop_mark();
        if (items.size() % 2) fail("sets items from an odd number of values");
        Node* d = top();
        if (d->kind != Kind::Dict) fail("sets items on a " + std::string(kind_name(d->kind)) + ", expected a dict");
        nest_all(d, items);
        for (size_t i = 0; i < items.size(); i += 2) d->dict.emplace_back(items[i], items[i + 1]);
        return false;
      }
      case 'q': memo_put(le(1)); return false;   // BINPUT
      case 'r': memo_put(le(4)); return false;   // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); return false;  // MEMOIZE
      case 'h': memo_get(le(1)); return false;   // BINGET
      case 'j': memo_get(le(4)); return false;   // LONG_BINGET
      case 'p': case 'g': {                      // PUT, GET (text index)
        const std::string s = line();
        uint64_t idx = 0;
        if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos)
          fail("has a malformed memo index '" + s + "'");
        idx = std::stoull(s);
        if (op_ == 'p') memo_put(idx); else memo_get(idx);
        return false;
      }
      case '0': pop(); return false;  // POP
      case '1': pop_mark(); return false;  // POP_MARK
      case 'c': {  // GLOBAL "module\nname\n"
        std::string module = line();
        std::string name = line();
        push(global(module, name));
        return false;
      }
      case 0x93: {  // STACK_GLOBAL
        Node* name = pop();
        Node* module = pop();
        if (module->kind != Kind::Str || name->kind != Kind::Str) fail("STACK_GLOBAL needs two strings");
        push(global(module->s, name->s));
        return false;
      }
      case 'R': {  // REDUCE
        Node* args = pop();
        Node* fn = pop();
        push(call(fn, args));
        return false;
      }
      case 0x81: {  // NEWOBJ
        Node* args = pop();
        Node* cls = pop();
        if (cls->kind != Kind::Global) fail("instantiates a " + std::string(kind_name(cls->kind)) + ", expected a class");
        const Fn f = classify(cls->module, cls->name, opt_);
        if (f == Fn::OrderedDict) {
          push(make(Kind::Dict));
        } else if (f == Fn::TorchClass) {
          if (args->kind != Kind::Tuple) fail("instantiates '" + gname(cls) + "' without an argument tuple");
          Node* o = make(Kind::Object);
          o->module = cls->module;
          o->name = cls->name;
          push(o);
        } else {
          fail("instantiates '" + gname(cls) + "', which is not a module class of a TorchScript archive");
        }
        return false;
      }
      case 'b': {  // BUILD
        Node* state = pop();
        Node* obj = top();
        if (obj->kind == Kind::Object) {
          nest(obj, state);
          obj->state = state;
        } else if (obj->kind != Kind::Dict && obj->kind != Kind::Tensor) {
          // OrderedDict carries `_metadata`, parameters may carry attributes: both are ignored.
          fail("sets the state of a " + std::string(kind_name(obj->kind)));
        }
        return false;
      }
      case 'Q': {  // BINPERSID: ('storage', torch.<T>Storage, key, location, numel)
        Node* pid = pop();
        if (pid->kind != Kind::Tuple || pid->items.size() < 5 || pid->items[0]->kind != Kind::Str ||
            pid->items[0]->s != "storage")
          fail("has a persistent id that is not a ('storage', type, key, location, size) tuple");
        const Node* type = pid->items[1];
        const Node* key = pid->items[2];
        const Node* numel = pid->items[4];
        DType d;
        if (type->kind != Kind::Global || type->module != "torch" || !storage_dtype(type->name, d))
          fail("has a persistent id with an unsupported storage type");
        if (key->kind != Kind::Str || numel->kind != Kind::Int || numel->i < 0)
          fail("has a persistent id with a malformed key or size");
        Node* st = make(Kind::Storage);
        st->dtype = d;
        st->s = key->s;
        st->numel = numel->i;
        push(st);
        return false;
      }
      default: {
        fail("uses an unsupported opcode");
      }
    }
  }

  static constexpr size_t kMaxStack = 1u << 20;
  static constexpr uint64_t kMaxMemo = 1u << 20;
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0, op_pos_ = 0;
  uint8_t op_ = 0;
  std::string where_;
  Options opt_;
  std::unique_ptr<Graph> g_;
  std::vector<Node*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Node*> memo_;
  uint64_t objects_ = 0;
};

}  // namespace

std::unique_ptr<Graph> unpickle(const uint8_t* data, size_t size, const std::string& where, const Options& options) {
  return Machine(data, size, where, options).run();
}

}  // namespace clipkit::pickle
