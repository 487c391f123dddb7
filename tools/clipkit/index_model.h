// The model a verb that queries an index embeds its text and image terms with.
#pragma once
#include <memory>
#include <string>

#include "clipkit/index.h"
#include "clipkit/model.h"

namespace clipkit::cli {

struct QueryModelOptions {
  std::string model;  // --model: another copy of the index's model (default: the recorded path)
  std::string dtype = "f32";
  int threads = 0;
  std::string arch;                   // --arch (default: the name the index was created with)
  std::string text_model, tokenizer;  // --text-model / --tokenizer (default: the recorded pair)
};

// Loads it and checks it is the index's model (fingerprint); names the index when it records no model.
std::shared_ptr<Model> load_query_model(const Index& idx, const QueryModelOptions& o);

}  // namespace clipkit::cli
