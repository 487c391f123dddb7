// The restricted unpickler on programs built in memory: the opcodes torch.save emits give the
// expected graph, and hostile programs (deep nesting, millions of objects, bad arguments) stop
// with a one-line Error(Format) naming the file and the problem, before memory grows.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "clipkit/error.h"
#include "io/pickle.h"
#include "io/torch_writer.h"

using namespace clipkit;
using namespace std::string_literals;
using clipkit::pickle::Kind;

namespace {

std::unique_ptr<pickle::Graph> run(const std::string& program, bool torchscript = false) {
  pickle::Options opt;
  opt.allow_torchscript_classes = torchscript;
  return pickle::unpickle(reinterpret_cast<const uint8_t*>(program.data()), program.size(), "f.pt:data.pkl", opt);
}

// The Error's message, which must be one line naming the file; "" when nothing was thrown.
std::string error_of(const std::string& program, bool torchscript = false) {
  try {
    run(program, torchscript);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Format);
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_NE(msg.find("f.pt:data.pkl"), std::string::npos) << msg;
    return msg;
  }
  return "";
}

void expect_error(const std::string& program, const std::string& part, bool torchscript = false) {
  const std::string msg = error_of(program, torchscript);
  EXPECT_NE(msg.find(part), std::string::npos) << "expected an error with '" << part << "', got '" << msg << "'";
}

std::string proto(const std::string& body) { return std::string("\x80\x02", 2) + body + "."; }

}  // namespace

TEST(Pickle, BuildsTheGraphOfAStateDict) {
  iotest::Pickler p;
  p.ordered_dict();
  p.str("w");
  p.tensor("HalfStorage", "0", 6, 1, {2, 2}, {2, 1});
  p.op('s');
  p.str("n");
  p.integer(-5);
  p.op('s');
  p.op('.');
  const auto g = run(p.b);
  ASSERT_EQ(g->root->kind, Kind::Dict);
  const pickle::Node* w = g->root->get("w");
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(w->kind, Kind::Tensor);
  EXPECT_EQ(w->offset, 1);
  EXPECT_EQ(w->shape, (Shape{2, 2}));
  EXPECT_EQ(w->stride, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(w->storage->dtype, DType::F16);
  EXPECT_EQ(w->storage->numel, 6);
  EXPECT_EQ(w->storage->s, "0");
  EXPECT_EQ(g->root->get("n")->i, -5);
  EXPECT_EQ(g->root->get("missing"), nullptr);
}

TEST(Pickle, ReadsScalarsStringsAndContainers) {
  // LONG1 (2 bytes, negative), BININT2, BINFLOAT, SHORT_BINUNICODE, BINBYTES, bools, None,
  // a list with APPEND / APPENDS, a dict from MARK ... DICT, TUPLE1..3, memo PUT/GET (text and binary)
  std::string b;
  b += "(";                                      // MARK for the outer tuple
  b += "\x8a\x02\x00\xff"s;                      // LONG1 -256
  b += std::string("M\x34\x12", 3);              // BININT2 0x1234
  b += std::string("G\x3f\xf8\x00\x00\x00\x00\x00\x00", 9);  // 1.5
  b += std::string("\x8c\x02hi", 4);             // SHORT_BINUNICODE
  b += std::string("C\x01z", 3);                 // SHORT_BINBYTES
  b += std::string("\x88\x89N", 3);              // True False None
  b += "]K\x01" "a(K\x02K\x03" "e";              // [1] + [2, 3]
  b += "(U\x01kK\x07" "d";                       // {'k': 7}
  b += "K\x01\x85K\x01K\x02\x86K\x01K\x02K\x03\x87";  // (1,) (1, 2) (1, 2, 3)
  b += "p0\n0g0\n";                              // PUT 0, POP, GET 0
  b += "q\x01h\x01";                             // BINPUT 1, BINGET 1
  b += "t";
  const auto g = run(proto(b));
  const pickle::Node* r = g->root;
  ASSERT_EQ(r->kind, Kind::Tuple);
  ASSERT_EQ(r->items.size(), 14u);
  EXPECT_EQ(r->items[0]->i, -256);
  EXPECT_EQ(r->items[1]->i, 0x1234);
  EXPECT_EQ(r->items[2]->f, 1.5);
  EXPECT_EQ(r->items[3]->s, "hi");
  EXPECT_EQ(r->items[4]->kind, Kind::Bytes);
  EXPECT_EQ(r->items[5]->i, 1);
  EXPECT_EQ(r->items[6]->i, 0);
  EXPECT_EQ(r->items[7]->kind, Kind::None);
  ASSERT_EQ(r->items[8]->items.size(), 3u);
  EXPECT_EQ(r->items[8]->items[2]->i, 3);
  EXPECT_EQ(r->items[9]->get("k")->i, 7);
  EXPECT_EQ(r->items[12]->items.size(), 3u);
  EXPECT_EQ(r->items[13], r->items[12]);  // memo: the same object
  EXPECT_EQ(r->items[8]->depth, 1u);
  EXPECT_EQ(r->depth, 2u);
}

TEST(Pickle, TorchScriptObjectsAndRebuildWrappers) {
  // NEWOBJ of a __torch__ class with a BUILD state; _rebuild_parameter around a tensor;
  // _rebuild_from_type_v2 applying a whitelisted function; torch.Size
  iotest::Pickler p;
  p.global("__torch__.m", "M");
  p.op(')');
  p.op('\x81');
  p.op('}');
  p.op('(');
  p.str("p");
  p.global("torch._utils", "_rebuild_parameter");
  p.op('(');
  p.tensor("FloatStorage", "0", 4, 0, {4}, {1});
  p.boolean(true);
  p.op('}');
  p.op('t');
  p.op('R');
  p.str("s");
  p.global("torch", "Size");
  p.int_tuple({2, 3});
  p.op('\x85');
  p.op('R');
  p.str("t");
  p.global("torch._tensor", "_rebuild_from_type_v2");
  p.op('(');
  p.global("torch._utils", "_rebuild_tensor_v2");
  p.global("torch", "Tensor");
  p.op('(');  // _rebuild_tensor_v2's arguments
  p.op('(');
  p.str("storage");
  p.global("torch", "FloatStorage");
  p.str("0");
  p.str("cpu");
  p.integer(4);
  p.op('t');
  p.op('Q');
  p.integer(0);
  p.int_tuple({2, 2});
  p.int_tuple({2, 1});
  p.boolean(false);
  p.ordered_dict();
  p.op('t');
  p.op('}');
  p.op('t');
  p.op('R');
  p.op('u');
  p.op('b');
  p.op('.');
  const auto g = run(p.b, true);
  ASSERT_EQ(g->root->kind, Kind::Object);
  EXPECT_EQ(g->root->module, "__torch__.m");
  EXPECT_EQ(g->root->name, "M");
  ASSERT_NE(g->root->state, nullptr);
  EXPECT_EQ(g->root->state->get("p")->kind, Kind::Tensor);
  EXPECT_EQ(g->root->state->get("p")->shape, (Shape{4}));
  EXPECT_EQ(g->root->state->get("s")->items.size(), 2u);
  ASSERT_EQ(g->root->state->get("t")->kind, Kind::Tensor);
  EXPECT_EQ(g->root->state->get("t")->shape, (Shape{2, 2}));
  // the same class outside a TorchScript archive is refused
  expect_error(proto("c__torch__.m\nM\n)\x81"), "disallowed global '__torch__.m.M'");
}

TEST(Pickle, RejectsMalformedPrograms) {
  expect_error(proto("\xff"), "unsupported opcode");
  expect_error(std::string("\x80\x02K\x01", 4), "without a STOP");
  expect_error(proto("X\x10\x00\x00\x00" "ab"s), "running past the end");
  expect_error("\x80\x02M\x01"s, "truncated");
  expect_error(proto("c" "torch"), "unterminated");
  expect_error(proto("t"), "needs a MARK");
  expect_error(proto("K\x01K\x02"), "2 values on the stack");
  expect_error(proto("(K\x01" "d"), "odd number");
  expect_error(proto("}(K\x01u"), "odd number");
  expect_error(proto("K\x01K\x02" "a"), "appends to a int");
  expect_error(proto("K\x01(e"), "appends to a int");
  expect_error(proto("K\x01K\x02K\x03s"), "sets an item on a int");
  expect_error(proto("K\x01(u"), "sets items on a int");
  expect_error(proto("\x85"), "too few stack values");
  expect_error(proto(std::string("\x8a\x09", 2) + std::string(9, '\x01')), "more than 64 bits");
  expect_error(proto("px\n"), "malformed memo index 'x'");
  expect_error(proto("K\x01r\xff\xff\xff\x7f"), "too large");
  expect_error(proto("K\x01U\x01x\x93"), "STACK_GLOBAL needs two strings");
  expect_error(proto("K\x01)R"), "calls a int");
  expect_error(proto("ccollections\nOrderedDict\nK\x01R"), "instead of an argument tuple");
  expect_error(proto("ccollections\nOrderedDict\n(K\x01tR"), "OrderedDict with arguments");
  expect_error(proto("ctorch\nSize\n)R"), "torch.Size with 0 arguments");
  expect_error(proto("ctorch\nFloatStorage\n)R"), "cannot be called");
  expect_error(proto("ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x02K\x03K\x04tR"), "expected a storage");
  expect_error(proto("ctorch._utils\n_rebuild_tensor_v2\n(K\x01tR"), "1 arguments");
  expect_error(proto("ctorch._utils\n_rebuild_parameter\n(K\x01tR"), "without a tensor");
  expect_error(proto("ctorch._tensor\n_rebuild_from_type_v2\n(K\x01tR"), "too few arguments");
  expect_error(proto("ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._tensor\n_rebuild_from_type_v2\nK\x01)tR"),
               "nests");
  expect_error(proto("ctorch._tensor\n_rebuild_from_type_v2\n(ccollections\nOrderedDict\nK\x01)tR"),
               "did not produce a tensor");
  expect_error(proto("K\x01)\x81"), "expected a class");
  expect_error(proto("ctorch\nSize\n)\x81"), "not a module class");
  expect_error(proto("c__torch__.m\nM\nK\x01\x81"), "without an argument tuple", true);
  expect_error(proto("K\x01K\x02" "b"), "sets the state of a int");
  expect_error(proto("K\x01Q"), "persistent id");
  expect_error(proto("(U\x07storageK\x01U\x01\x30U\x03\x63puK\x04tQ"), "unsupported storage type");
  expect_error(proto("(U\x07storagectorch\nFloatStorage\nK\x01U\x03\x63puK\x04tQ"), "malformed key or size");
  expect_error(proto("\x80\x01"), "protocol 1");
}

TEST(Pickle, DeepNestingStopsAtTheDepthLimit) {
  // 10 million nested one-item tuples in 10 MB: "(" opens nothing, EMPTY_TUPLE then TUPLE1 over
  // and over. The loader stops at the depth limit, long before it has built many objects.
  std::string b(1, ')');
  b.append(10'000'000, '\x85');
  const std::string msg = error_of(proto(b));
  EXPECT_NE(msg.find("nests containers more than 1000 levels deep"), std::string::npos) << msg;
  // the limit itself is reachable
  std::string ok(1, ')');
  ok.append(pickle::kMaxDepth, '\x85');
  EXPECT_EQ(run(proto(ok))->root->depth, pickle::kMaxDepth);
  // nested MARKs, lists nested through APPEND and dicts through SETITEM are bounded the same way
  EXPECT_NE(error_of(proto(std::string(2000, '('))).find("nests MARKs more than 1000"), std::string::npos);
  std::string lists = "]";
  for (int i = 0; i < 1001; ++i) lists = "]" + lists + "a";
  EXPECT_NE(error_of(proto(lists)).find("1000 levels"), std::string::npos);
  std::string dicts = "}";
  for (int i = 0; i < 1001; ++i) dicts = "}K\x01" + dicts + "s";
  EXPECT_NE(error_of(proto(dicts)).find("1000 levels"), std::string::npos);
}

TEST(Pickle, ObjectCountIsBounded) {
  // 5 million Nones appended to a list, 10 MB: stops after kMaxObjects objects and items
  std::string b = "]";
  for (int i = 0; i < 5'000'000; ++i) b += "Na";
  const std::string msg = error_of(proto(b));
  EXPECT_NE(msg.find("more than " + std::to_string(pickle::kMaxObjects) + " objects"), std::string::npos) << msg;
  // the same number of items again and again through memo'd torch.Size calls: items count too
  std::string sizes = "ctorch\nSize\nq\x00("s;
  sizes.append(60'000, 'N');
  sizes += "lq\x01("s;
  for (int i = 0; i < 40; ++i) sizes += "h\x00h\x01\x85R0"s;
  sizes += "t";
  EXPECT_NE(error_of(proto(sizes)).find("objects"), std::string::npos);
  // stack and memo entries are bounded too
  std::string stack = "N";
  for (int i = 0; i < (1 << 20); ++i) stack += "q\x00h\x00"s;
  // memo gets push the same object: the stack limit stops it
  EXPECT_NE(error_of(proto(stack)).find("stack grows beyond"), std::string::npos);
  std::string memo = "N";
  memo.append((1 << 20) + 1, '\x94');
  EXPECT_NE(error_of(proto(memo)).find("memo entries"), std::string::npos);
}

TEST(Pickle, ReadsTheOtherOpcodesOfProtocols2To5) {
  // FRAME, BININT, LONG4, BINUNICODE(8), BINSTRING, BINBYTES(8), LIST, STACK_GLOBAL, MEMOIZE with
  // LONG_BINGET, POP_MARK, LONG1 of zero bytes
  std::string b = "\x95"s + std::string(8, '\0');
  b += "(";
  b += "J\xfe\xff\xff\xff"s;                          // BININT -2
  b += "\x8b\x03\x00\x00\x00\x01\x00\x80"s;          // LONG4, 3 bytes 0x800001: negative
  b += "X\x02\x00\x00\x00" "ab"s;                     // BINUNICODE
  b += "\x8d\x01\x00\x00\x00\x00\x00\x00\x00" "c"s;   // BINUNICODE8
  b += "T\x01\x00\x00\x00" "d"s;                      // BINSTRING
  b += "B\x02\x00\x00\x00\x00\x01"s;                  // BINBYTES
  b += "\x8e\x00\x00\x00\x00\x00\x00\x00\x00"s;      // BINBYTES8, empty
  b += "(K\x05l";                                     // LIST [5]
  b += "\x8c\x05torch\x8c\x04Size\x93";               // STACK_GLOBAL torch.Size
  b += "K\x07\x94j\x00\x00\x00\x00"s;                 // MEMOIZE 7 as entry 0, LONG_BINGET 0
  b += "(K\x01K\x02" "1";                             // POP_MARK drops both
  b += "\x8a\x00"s;                                   // LONG1 of no bytes: 0
  b += "t";
  const auto g = run(proto(b));
  const auto& r = g->root->items;
  ASSERT_EQ(r.size(), 12u);
  EXPECT_EQ(r[0]->i, -2);
  EXPECT_EQ(r[1]->i, -8388607);
  EXPECT_EQ(r[2]->kind, Kind::Str);
  EXPECT_EQ(r[2]->s, "ab");
  EXPECT_EQ(r[3]->s, "c");
  EXPECT_EQ(r[4]->s, "d");
  EXPECT_EQ(r[5]->kind, Kind::Bytes);
  EXPECT_EQ(r[5]->s, "\x00\x01"s);
  EXPECT_EQ(r[6]->kind, Kind::Bytes);
  EXPECT_EQ(r[6]->s, "");
  ASSERT_EQ(r[7]->kind, Kind::List);
  ASSERT_EQ(r[7]->items.size(), 1u);
  EXPECT_EQ(r[7]->items[0]->i, 5);
  EXPECT_EQ(r[8]->kind, Kind::Global);
  EXPECT_EQ(r[8]->module, "torch");
  EXPECT_EQ(r[8]->name, "Size");
  EXPECT_EQ(r[9]->i, 7);
  EXPECT_EQ(r[10], r[9]);
  EXPECT_EQ(r[11]->kind, Kind::Int);
  EXPECT_EQ(r[11]->i, 0);
}

TEST(Pickle, TensorArgumentsAndStateAreChecked) {
  // A FloatStorage of 4 elements, as a persistent id.
  const std::string storage = "(U\x07" "storagectorch\nFloatStorage\nU\x01" "0U\x03" "cpuK\x04tQ"s;
  const std::string v2 = "ctorch._utils\n_rebuild_tensor_v2\n(" + storage;
  expect_error(proto(v2 + "N)" ")tR"), "rebuilds a tensor with a non-integer storage offset");
  expect_error(proto(v2 + "K\x00N)tR"s), "tensor size is a None, expected a tuple");
  expect_error(proto(v2 + "K\x00(Nt)tR"s), "tensor size holds a None, expected ints");
  expect_error(proto(v2 + "K\x00K\x02\x85)tR"s), "size [2] and stride [] differ in rank");
  expect_error(proto("ctorch._utils\n_rebuild_tensor\n(U\x01xK\x00))tR"s), "from a str, expected a storage");
  // _rebuild_tensor (the first version) and a state set on the tensor or on a dict (ignored)
  const auto t = run(proto("ctorch._utils\n_rebuild_tensor\n(" + storage + "K\x01K\x03\x85K\x01\x85tR}b"s));
  ASSERT_EQ(t->root->kind, Kind::Tensor);
  EXPECT_EQ(t->root->offset, 1);
  EXPECT_EQ(t->root->shape, (Shape{3}));
  EXPECT_EQ(t->root->storage->numel, 4);
  EXPECT_EQ(run(proto("}}b"))->root->kind, Kind::Dict);
  // OrderedDict instantiated by NEWOBJ is an empty dict
  const auto d = run(proto("ccollections\nOrderedDict\n)\x81"));
  EXPECT_EQ(d->root->kind, Kind::Dict);
  EXPECT_TRUE(d->root->dict.empty());
  // stack and memo misuse
  expect_error(proto("0"), "pops from an empty stack");
  expect_error(proto("Nb"), "reads from an empty stack");
  expect_error(proto("h\x05"), "reads memo entry 5 that was never stored");
  expect_error(proto("g12\n"), "reads memo entry 12 that was never stored");
  // the message says where: the opcode and its byte offset
  expect_error(proto("N\xff"), "(opcode 0xff at byte 3)");
}

TEST(Pickle, MessagesNameTheKindOfValueFound) {
  // APPEND on each kind of value that is not a list: the message names what was found
  const std::string storage = "(U\x07" "storagectorch\nFloatStorage\nU\x01" "0U\x03" "cpuK\x04tQ"s;
  const std::string tensor = "ctorch._utils\n_rebuild_tensor_v2\n(" + storage + "K\x00K\x04\x85K\x01\x85\x89)tR"s;
  struct Case {
    std::string value;
    const char* kind;
    bool torchscript;
  };
  for (const Case& c : {Case{"N", "None", false}, Case{"\x88", "bool", false},
                        Case{"G\x3f\xf0\x00\x00\x00\x00\x00\x00"s, "float", false}, Case{"C\x01x", "bytes", false},
                        Case{")", "tuple", false}, Case{"}", "dict", false},
                        Case{"ccollections\nOrderedDict\n", "global", false},
                        Case{"c__torch__.m\nM\n)\x81", "object", true}, Case{storage, "storage", false},
                        Case{tensor, "tensor", false}}) {
    SCOPED_TRACE(c.kind);
    expect_error(proto(c.value + "K\x01" "a"), "appends to a "s + c.kind + ", expected a list", c.torchscript);
  }
  // and a list where a dict is needed
  expect_error(proto("]K\x01K\x02s"), "sets an item on a list, expected a dict");
}
