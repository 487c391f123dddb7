// The int8 transformer blocks fuse every epilogue into the step that reads its output (in_proj's
// into the attention, out_proj's and c_proj's residual adds into the following layer norm). The
// result must be, bit for bit, what the unfused composition of the same int8 layers gives.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "model/encoder.h"
#include "model/model_test_util.h"
#include "model/transformer.h"

using namespace clipkit;

namespace {

// The blocks one layer call at a time, each int8 layer with its own epilogue pass.
void unfused_blocks(const Checkpoint& ckpt, const std::string& prefix, int64_t width, int layers, int heads,
                    bool causal, int64_t batch, int64_t seq, std::vector<float>& x) {
  const int64_t rows = batch * seq;
  std::vector<uint8_t> q(static_cast<size_t>(rows * 4 * width)), qh(q.size());
  std::vector<float> s(static_cast<size_t>(rows)), sh(s.size()), qkv(static_cast<size_t>(rows * 3 * width)),
      h(static_cast<size_t>(rows * width));
  for (int i = 0; i < layers; ++i) {
    const std::string p = prefix + "resblocks." + std::to_string(i) + ".";
    const LayerNormParams ln_1(ckpt, p + "ln_1.", width), ln_2(ckpt, p + "ln_2.", width);
    const Linear in_proj = load_linear(ckpt, p + "attn.in_proj_weight", p + "attn.in_proj_bias", width, 3 * width,
                                       WeightFormat::Int8);
    const Linear out_proj =
        load_linear(ckpt, p + "attn.out_proj.weight", p + "attn.out_proj.bias", width, width, WeightFormat::Int8);
    const Linear c_fc =
        load_linear(ckpt, p + "mlp.c_fc.weight", p + "mlp.c_fc.bias", width, 4 * width, WeightFormat::Int8);
    const Linear c_proj =
        load_linear(ckpt, p + "mlp.c_proj.weight", p + "mlp.c_proj.bias", 4 * width, width, WeightFormat::Int8);
    ln_1.apply_quantized(x.data(), rows, q.data(), s.data());
    in_proj.forward_quantized(q.data(), s.data(), rows, qkv.data());
    multi_head_attention(qkv.data(), batch, seq, width, heads, causal, h.data());
    out_proj.forward_accumulate(h.data(), rows, x.data());
    ln_2.apply_quantized(x.data(), rows, q.data(), s.data());
    c_fc.forward_quantized_to_quantized(q.data(), s.data(), rows, qh.data(), sh.data(), Activation::QuickGelu);
    c_proj.forward_quantized_accumulate(qh.data(), sh.data(), rows, x.data());
  }
}

}  // namespace

TEST(TransformerInt8, FusedBlocksEqualTheUnfusedLayersBitForBit) {
  const Checkpoint ckpt = modeltest::read_openai_safetensors("models/tiny-vit.safetensors");
  const Architecture arch = infer_architecture(ckpt);
  struct Tower {
    std::string prefix;
    int64_t width;
    int layers, heads;
    bool causal;
    int64_t seq;
  };
  // the image tower at a fused-attention length and at a general-path one; the causal text tower
  const std::vector<Tower> towers = {
      {"visual.transformer.", arch.vision_width, arch.vision_layers, arch.vision_heads, false, 50},
      {"visual.transformer.", arch.vision_width, arch.vision_layers, arch.vision_heads, false, 97},
      {"transformer.", arch.text_width, arch.text_layers, arch.text_heads, true, 77}};
  for (const Tower& t : towers) {
    const Transformer tower(ckpt, t.prefix, t.width, t.layers, t.heads, Activation::QuickGelu, WeightFormat::Int8);
    // 3 items (with 2 threads or more, too few to share out: the attention shares its pairs and
    // quantises after), and a larger batch (quantised item by item, several rows per thread)
    const int64_t large_batch = (int64_t{6} << 20) / (3 * t.width * 4 * t.seq) + 1;
    for (const int64_t batch : {int64_t{3}, large_batch}) {
    const int64_t rows = batch * t.seq;
    std::mt19937 rng(static_cast<uint32_t>(t.seq));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(rows * t.width));
    for (float& v : x) v = nd(rng);
    std::vector<float> want = x;
    unfused_blocks(ckpt, t.prefix, t.width, t.layers, t.heads, t.causal, batch, t.seq, want);
    DebugTrace trace;
    tower.forward(x.data(), batch, t.seq, t.causal, &trace, "t.");
    EXPECT_EQ(x, want) << t.prefix << " seq " << t.seq << " batch " << batch;
    // the trace after the last block is item 0's rows of the result
    const auto& last = trace.at("t.block" + std::to_string(t.layers - 1));
    EXPECT_TRUE(std::equal(last.begin(), last.end(), want.begin())) << t.prefix;
    }
  }
}
