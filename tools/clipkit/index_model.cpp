#include "clipkit/index_model.h"

#include "clipkit/error.h"
#include "clipkit/options.h"

namespace clipkit::cli {

std::shared_ptr<Model> load_query_model(const Index& idx, const QueryModelOptions& o) {
  const IndexInfo info = idx.info();
  const std::string path = o.model.empty() ? info.model_path : o.model;
  if (path.empty()) throw Error(ErrorCode::InvalidArgument, "index " + idx.dir() + " records no model path; pass --model");
  ModelOptions mo;
  mo.dtype = o.dtype;
  mo.threads = o.threads;
  mo.arch = o.arch.empty() ? info.model_arch : o.arch;  // the name the index was created with
  mo.text_model = o.text_model;
  mo.tokenizer = o.tokenizer;
  use_recorded_text_model(mo.text_model, mo.tokenizer, info.text_model_path, info.tokenizer_path);
  std::shared_ptr<Model> model = Model::load(path, mo);
  idx.check_model(*model);
  return model;
}

}  // namespace clipkit::cli
