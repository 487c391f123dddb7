// The description of a loaded model that `clipkit info` prints and the Python package's
// Model.info returns: one JSON object with the same fields in the same order.
#pragma once
#include <nlohmann/json.hpp>

#include "clipkit/model.h"

namespace clipkit {

nlohmann::ordered_json model_info_json(const ModelInfo& info);

}  // namespace clipkit
