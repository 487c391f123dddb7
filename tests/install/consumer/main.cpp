// Loads a model with an installed clipkit, encodes the texts of a golden file and compares the
// embeddings with the reference ones it holds ("texts", "text_embeds").
//   consumer MODEL GOLDEN_JSON
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clipkit/error.h"
#include "clipkit/model.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: consumer MODEL GOLDEN_JSON\n");
    return 2;
  }
  try {
    std::ifstream in(argv[2]);
    const nlohmann::json golden = nlohmann::json::parse(in);
    const auto texts = golden.at("texts").get<std::vector<std::string>>();
    const auto want = golden.at("text_embeds").get<std::vector<std::vector<float>>>();
    auto model = clipkit::Model::load(argv[1]);
    const clipkit::Embeddings got = model->encode_texts(texts);
    if (got.rows != static_cast<int64_t>(want.size())) {
      std::fprintf(stderr, "consumer: %lld embeddings for %zu texts\n", static_cast<long long>(got.rows), want.size());
      return 1;
    }
    double worst = 0;
    for (int64_t i = 0; i < got.rows; ++i) {
      if (static_cast<size_t>(got.dim) != want[i].size()) {
        std::fprintf(stderr, "consumer: dimension %lld, golden %zu\n", static_cast<long long>(got.dim), want[i].size());
        return 1;
      }
      for (int64_t j = 0; j < got.dim; ++j) worst = std::fmax(worst, std::fabs(got.row(i)[j] - want[i][j]));
    }
    std::printf("consumer: %lld texts, dimension %lld, largest difference from the golden embeddings %.3g\n",
                static_cast<long long>(got.rows), static_cast<long long>(got.dim), worst);
    return worst <= 1e-4 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
