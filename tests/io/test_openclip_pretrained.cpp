// The open_clip pretrained table (expected values: open_clip's src/open_clip/pretrained.py and
// docs/openclip_results.csv), the hub's published SHA-256, and the resolution of ARCH/TAG names to
// the download folder (tests/data/openclip: open_clip fixtures, see tests/data/FIXTURES.md).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>

#include "clipkit/error.h"
#include "core/mapped_file.h"
#include "io/checkpoint.h"
#include "io/download.h"
#include "io/local_server.h"
#include "io/openclip_pretrained.h"
#include "support/test_support.h"

using namespace clipkit;
namespace fs = std::filesystem;

namespace {

// Sets CLIPKIT_HOME for one test.
struct ScopedHome {
  explicit ScopedHome(const std::string& dir) { setenv("CLIPKIT_HOME", dir.c_str(), 1); }
  ~ScopedHome() { unsetenv("CLIPKIT_HOME"); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(OpenClipPretrained, TableEntries) {
  const OpenClipPretrained* h = find_openclip_pretrained("ViT-H-14/laion2b_s32b_b79k");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->hf_repo, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K");
  EXPECT_EQ(h->url(), "https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K/resolve/main/" + h->file);
  EXPECT_DOUBLE_EQ(h->imagenet_top1, 0.7796);
  EXPECT_EQ(h->resize_mode, "shortest");
  EXPECT_DOUBLE_EQ(h->mean[0], 0.48145466);
  EXPECT_DOUBLE_EQ(h->std[2], 0.27577711);
  // open_clip's spellings: ':' separator, tag cleaned ('-' for '_', lower case).
  EXPECT_EQ(find_openclip_pretrained("ViT-H-14:laion2b-s32b-b79k"), h);
  EXPECT_EQ(find_openclip_pretrained("vit-h-14/LAION2B_S32B_B79K"), h);

  const OpenClipPretrained* dfn = find_openclip_pretrained("ViT-H-14-378-quickgelu/dfn5b");
  ASSERT_NE(dfn, nullptr);
  EXPECT_EQ(dfn->hf_repo, "apple/DFN5B-CLIP-ViT-H-14-378");
  EXPECT_EQ(dfn->resize_mode, "squash");
  EXPECT_DOUBLE_EQ(dfn->imagenet_top1, 0.8437);
  EXPECT_EQ(find_openclip_pretrained("ViT-H-14-quickgelu/dfn5b")->resize_mode, "squash");

  const OpenClipPretrained* l14 = find_openclip_pretrained("ViT-L-14/laion2b_s32b_b82k");
  ASSERT_NE(l14, nullptr);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(l14->mean[c], 0.5);
    EXPECT_EQ(l14->std[c], 0.5);
  }
  EXPECT_EQ(find_openclip_pretrained("ViT-bigG-14/laion2b_s39b_b160k")->hf_repo,
            "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k");
  EXPECT_EQ(find_openclip_pretrained("RN50-quickgelu/openai")->hf_repo, "timm/resnet50_clip.openai");
  EXPECT_EQ(find_openclip_pretrained("ViT-g-14/laion2b_s34b_b88k")->hf_repo, "laion/CLIP-ViT-g-14-laion2B-s34B-b88K");
  EXPECT_EQ(find_openclip_pretrained("ViT-L-14/datacomp_xl_s13b_b90k")->hf_repo,
            "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K");
  EXPECT_EQ(find_openclip_pretrained("ViT-B-32/laion2b_s34b_b79k")->hf_repo, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K");
  // QuickGELU-trained tags are listed under the -quickgelu name only.
  EXPECT_EQ(find_openclip_pretrained("RN50/openai"), nullptr);
  EXPECT_EQ(find_openclip_pretrained("ViT-H-14/dfn5b"), nullptr);
  EXPECT_EQ(find_openclip_pretrained("ViT-B-32"), nullptr);
  EXPECT_EQ(find_openclip_pretrained("ViT-B-32/laion2b_s34b_b79k/x"), nullptr);

  std::set<std::string> names;
  for (const auto& m : openclip_pretrained()) {
    EXPECT_TRUE(names.insert(m.name()).second) << m.name();
    EXPECT_TRUE(m.file == "open_clip_model.safetensors" || m.file == "open_clip_pytorch_model.bin") << m.name();
    EXPECT_GT(m.params_millions, 100) << m.name();
    EXPECT_TRUE(m.imagenet_top1 == -1 || (m.imagenet_top1 > 0 && m.imagenet_top1 < 1)) << m.name();
    EXPECT_EQ(m.interpolation, "bicubic");
    EXPECT_EQ(m.hf_repo.find('/') != std::string::npos && m.hf_repo.back() != '/', true) << m.name();
  }
  EXPECT_GE(names.size(), 70u);
}

TEST(OpenClipPretrained, HubPublishedSha256) {
  iotest::LocalServer server;
  const std::string path = "/laion/CLIP-ViT-H-14-laion2B-s32B-b79K/resolve/main/open_clip_model.safetensors";
  server.serve(path, "abc");
  DownloadOptions o;
  o.base_url = server.base();
  const std::string url = "https://huggingface.co" + path;
  EXPECT_EQ(hub_published_sha256(url, o), "");  // no header: nothing published
  server.header(path, "X-Linked-Etag", "\"BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD\"");
  EXPECT_EQ(hub_published_sha256(url, o), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(server.ranges().empty());  // a HEAD request: nothing transferred
  server.header(path, "X-Linked-Etag", "\"4b3a2c\"");  // a git object id, not a SHA-256
  EXPECT_EQ(hub_published_sha256(url, o), "");
  EXPECT_EQ(hub_published_sha256("https://huggingface.co/missing/resolve/main/x.bin", o), "");
}

TEST(OpenClipPretrained, ResolvesDownloadFolder) {
  const std::string home = test::temp_dir();
  ScopedHome scoped(home);
  EXPECT_EQ(clipkit_home(), home);
  const std::string name = "ViT-bigG-14/laion2b_s39b_b160k";
  const OpenClipPretrained* m = find_openclip_pretrained(name);
  ASSERT_NE(m, nullptr);
  const std::string dir = home + "/openclip/ViT-bigG-14/laion2b_s39b_b160k";
  EXPECT_EQ(openclip_cache_dir(*m), dir);

  // Not downloaded: one line naming the command that fetches it.
  std::string err = error_of([&] { resolve_openclip_model(name); });
  EXPECT_NE(err.find("clipkit models download ViT-bigG-14/laion2b_s39b_b160k"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos);
  err = error_of([&] { load_checkpoint(name); });
  EXPECT_NE(err.find("clipkit models download ViT-bigG-14/laion2b_s39b_b160k"), std::string::npos) << err;

  // Laid out as a download: the weights under the name the table gives, and the config.
  fs::create_directories(dir);
  fs::copy_file(test::data_path("openclip/vit-bigg-14/open_clip_model.safetensors"), dir + "/" + m->file);
  err = error_of([&] { resolve_openclip_model(name); });  // config still missing
  EXPECT_NE(err.find("open_clip_config.json"), std::string::npos) << err;
  fs::copy_file(test::data_path("openclip/vit-bigg-14/open_clip_config.json"), dir + "/open_clip_config.json");
  EXPECT_EQ(resolve_openclip_model(name).value(), dir);
  EXPECT_EQ(resolve_openclip_model("ViT-bigG-14:laion2b-s39b-b160k").value(), dir);

  const Checkpoint via_name = load_checkpoint(name);
  const Checkpoint direct = load_checkpoint(test::data_path("openclip/vit-bigg-14/open_clip_model.safetensors"));
  EXPECT_EQ(via_name.path, dir);
  ASSERT_EQ(via_name.tensors.size(), direct.tensors.size());
  EXPECT_EQ(via_name.f32("visual.proj"), direct.f32("visual.proj"));
  EXPECT_EQ(via_name.f32("text_projection"), direct.f32("text_projection"));

  // Ordinary paths are not names; hints for near misses.
  EXPECT_FALSE(resolve_openclip_model("models/tiny.safetensors").has_value());
  EXPECT_FALSE(resolve_openclip_model("/abs/ViT-B-32").has_value());
  err = error_of([&] { resolve_openclip_model("RN50/openai"); });
  EXPECT_NE(err.find("RN50-quickgelu/openai"), std::string::npos) << err;
  err = error_of([&] { resolve_openclip_model("ViT-B-32/no_such_tag"); });
  EXPECT_NE(err.find("unknown open_clip tag 'no_such_tag'"), std::string::npos) << err;
  err = error_of([&] { load_checkpoint("nowhere/model.safetensors"); });
  EXPECT_NE(err.find("does not exist"), std::string::npos) << err;
}
