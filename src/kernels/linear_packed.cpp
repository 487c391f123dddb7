// Linear layers' packed layouts in files: describing a layer's packed weights for `clipkit
// convert` and using stored ones in place at load.
#include "kernels/linear_impl.h"

#include <cmath>

namespace clipkit {

namespace {

using dt = dnnl::memory::data_type;

// A oneDNN layout of a 2-D weight in core's terms (BlockedLayout); false unless it is a plain
// blocked layout (no offset, padding offsets or compensation).
bool blocked_layout_of(const dnnl::memory::desc& desc, BlockedLayout& l) {
  const dnnl_memory_desc_t& m = desc.data;
  if (m.ndims != 2 || m.format_kind != dnnl_blocked || m.offset0 != 0 || m.extra.flags != 0) return false;
  const dnnl_blocking_desc_t& b = m.format_desc.blocking;
  l = BlockedLayout();
  for (int d = 0; d < 2; ++d) {
    if (m.padded_offsets[d] != 0) return false;
    l.dims[d] = m.dims[d];
    l.padded[d] = m.padded_dims[d];
    l.strides[d] = b.strides[d];
  }
  for (int i = 0; i < b.inner_nblks; ++i) l.blocks.emplace_back(static_cast<int>(b.inner_idxs[i]), b.inner_blks[i]);
  try {
    l.validate("layout", INT64_MAX);
  } catch (const Error&) {
    return false;
  }
  return static_cast<size_t>(l.span()) * dnnl::memory::data_type_size(m.data_type == dnnl_s8 ? dt::s8 : dt::f32) ==
         desc.get_size();
}

// The rows [row0, row0 + rows) of a stored weight as one piece (cut from a larger one where its
// blocks allow), in `buf`; nullptr when they span several pieces or cut through a block.
const PackedPiece* stored_piece(const PackedWeight& w, int64_t row0, int64_t rows, PackedPiece& buf) {
  PackedWeight view;
  if (!w.rows_view(row0, rows, view) || view.pieces.size() != 1) return nullptr;
  buf = std::move(view.pieces[0]);
  return &buf;
}

}  // namespace

std::string packed_layout_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

bool Linear::packed_weight(PackedWeight& pw) const {
  if (!impl_) return false;
  pw = PackedWeight();
  pw.out = out_;
  pw.in = in_;
  pw.owner = impl_;
  pw.isa = packed_layout_isa();
  if (format_ == WeightFormat::F16) {
    pw.dtype = DType::F16;
    for (const auto& ch : impl_->chunks) {
      PackedPiece p;
      if (!blocked_layout_of(ch.desc, p.layout)) return false;
      p.row0 = ch.col0;
      p.rows = ch.cols;
      p.data = ch.data;
      pw.pieces.push_back(std::move(p));
    }
    return true;
  }
  pw.dtype = format_ == WeightFormat::Int8 ? DType::I8 : DType::F32;
  PackedPiece p;
  if (!blocked_layout_of(impl_->packed_desc, p.layout)) return false;
  p.row0 = 0;
  p.rows = out_;
  p.data = impl_->packed_storage.get();
  pw.pieces.push_back(std::move(p));
  if (format_ == WeightFormat::Int8) pw.zero_shift = impl_->zero_shift;
  return true;
}

Linear Linear::from_packed(const PackedWeight& w, int64_t row0, int64_t out, std::vector<float> bias,
                           WeightFormat format, const float* scale, bool* in_place) {
  const int64_t in = w.in;
  linear_detail::check_finite_shape(in, out);
  if (in_place) *in_place = false;
  if (row0 < 0 || out > w.out - row0)
    throw Error(ErrorCode::Internal, "rows " + std::to_string(row0) + "+" + std::to_string(out) + " of a packed weight of " +
                                         std::to_string(w.out) + " rows");
  const DType want = format == WeightFormat::F32 ? DType::F32 : format == WeightFormat::F16 ? DType::F16 : DType::I8;
  if (w.dtype != want)
    throw Error(ErrorCode::Internal, std::string("a ") + dtype_name(w.dtype) + " packed weight used as a " +
                                         weight_format_name(format) + " layer");
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != out)
    throw Error(ErrorCode::Shape, "linear layer bias has " + std::to_string(bias.size()) + " values, expected " +
                                      std::to_string(out));
  if (format == WeightFormat::Int8) {
    if (scale == nullptr) throw Error(ErrorCode::InvalidArgument, "int8 packed weight without scales");
    for (int64_t o = 0; o < out; ++o)
      if (!std::isfinite(scale[o]) || scale[o] < 0.0f)
        throw Error(ErrorCode::InvalidArgument, "int8 linear weight has an invalid scale");
    if (static_cast<int64_t>(w.zero_shift.size()) != w.out)
      throw Error(ErrorCode::Format, "int8 packed weight without its zero shift");
  }
  Linear l;
  l.in_ = in;
  l.out_ = out;
  l.bias_count_ = static_cast<int64_t>(bias.size());
  l.format_ = format;
  try {
    auto impl = std::make_shared<Impl>();
    impl->in = in;
    impl->out = out;
    impl->format = format;
    impl->bias = bias;
    if (format == WeightFormat::Int8) impl->out_scale.assign(scale, scale + out);  // the primitives' attribute
    if (format == WeightFormat::F16) {
      impl->plan_half_chunks();
      bool fits = true;
      std::vector<std::pair<const void*, size_t>> ranges;
      for (auto& ch : impl->chunks) {
        PackedPiece piece;
        const PackedPiece* p = stored_piece(w, row0 + ch.col0, ch.cols, piece);
        BlockedLayout mine;
        if (!p || !blocked_layout_of(ch.desc, mine) || mine != p->layout) {
          fits = false;
          break;
        }
        ch.data = static_cast<const uint16_t*>(p->data);
        ranges.emplace_back(p->data, static_cast<size_t>(p->layout.span()) * 2);
      }
      if (fits) {
        impl->half_owner = w.owner;
        for (const auto& [ptr, bytes] : ranges) prefault_mapped(ptr, bytes);
        l.impl_ = std::move(impl);
        if (in_place) *in_place = true;
        return l;
      }
    } else {
      PackedPiece piece;
      const PackedPiece* p = stored_piece(w, row0, out, piece);
      const dnnl::memory::desc desc = impl->wanted_desc();
      BlockedLayout mine;
      if (p && blocked_layout_of(desc, mine) && mine == p->layout) {
        const size_t bytes = desc.get_size();
        void* stored = const_cast<void*>(p->data);
        if (reinterpret_cast<uintptr_t>(stored) % 64 == 0) {
          impl->packed_storage = std::shared_ptr<void>(std::const_pointer_cast<void>(w.owner), stored);
          prefault_mapped(stored, bytes);
        } else {  // still no repacking: one copy into weight memory
          impl->packed_storage = allocate_weight_memory(bytes);
          std::memcpy(impl->packed_storage.get(), stored, bytes);
        }
        impl->packed_desc = desc;
        impl->packed = dnnl::memory(desc, onednn::cpu_engine(), impl->packed_storage.get());
        if (format == WeightFormat::Int8) {
          impl->zero_shift.assign(w.zero_shift.begin() + row0, w.zero_shift.begin() + row0 + out);
        }
        l.impl_ = std::move(impl);
        if (in_place) *in_place = true;
        return l;
      }
    }
  } catch (const dnnl::error& err) {
    throw Error(ErrorCode::Internal, "setting up a " + std::to_string(out) + "x" + std::to_string(in) +
                                         " packed linear weight failed: " + onednn::describe(err));
  }
  // The stored layout is not this CPU's: read the values out and pack them as a plain weight would be.
  if (format == WeightFormat::Int8) {
    std::vector<int8_t> q(static_cast<size_t>(out * in));
    w.unpack_rows(row0, out, q.data());
    return from_int8(q.data(), scale, std::move(bias), in, out);
  }
  std::vector<float> plain(static_cast<size_t>(out * in));
  if (format == WeightFormat::F16) {
    std::vector<uint16_t> h(plain.size());
    w.unpack_rows(row0, out, h.data());
    for (size_t i = 0; i < h.size(); ++i) plain[i] = half_to_float(h[i]);
  } else {
    w.unpack_rows(row0, out, plain.data());
  }
  return Linear(plain.data(), std::move(bias), in, out, format);
}

}  // namespace clipkit
