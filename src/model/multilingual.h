// Multilingual CLIP models: an XLM-RoBERTa text tower (src/model/xlmr.h) with its SentencePiece
// tokenizer, alone (an M-CLIP folder), with open_clip's ViT in one checkpoint, or paired with
// the image tower of another model (ModelOptions::text_model).
#pragma once
#include <memory>
#include <string>

#include "clipkit/model.h"
#include "io/checkpoint.h"

namespace clipkit {

// True when the checkpoint is an M-CLIP text tower (transformer.* + LinearTransformation.*) or an
// open_clip XLM-R CLIP model (visual.*, text.transformer.*, text.proj.*).
bool is_xlmr_checkpoint(const Checkpoint& ckpt);

// Model::load / Model::inspect for such a checkpoint; `name` is the name or path it was given by.
std::shared_ptr<Model> load_xlmr_model(const Checkpoint& ckpt, const std::string& name, const ModelOptions& options);
ModelInfo inspect_xlmr_model(const Checkpoint& ckpt, const std::string& name, const ModelOptions& options);

// The image tower of `image` with the text tower of options.text_model. Throws Error(Mismatch)
// naming both sizes when their embeddings differ, Error(Format) when options.text_model holds no
// XLM-RoBERTa text tower or `image` no image tower.
std::shared_ptr<Model> pair_text_model(std::shared_ptr<Model> image, const ModelOptions& options);
ModelInfo inspect_pair(const ModelInfo& image, const ModelOptions& options);

// A warning through options.on_warning, else the process-wide handler, else stderr.
void report_warning(const ModelOptions& options, const std::string& message);
// The warning for a load that had to repack weights stored in another CPU's kernel layouts
// (empty when none was).
std::string repacked_warning(const Checkpoint& ckpt, const std::string& path);

}  // namespace clipkit
