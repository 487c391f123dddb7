// PyTorch zip archives: OpenAI's TorchScript `.pt` files (the pickled module tree in data.pkl)
// and plain torch.save state dicts (open_clip `.pt`/`.bin`, Hugging Face pytorch_model.bin).
#pragma once
#include <map>
#include <string>

#include "core/tensor.h"

namespace clipkit {

struct TorchArchive {
  bool torchscript = false;                     // TorchScript module archive vs torch.save state dict
  std::map<std::string, Tensor> tensors;        // dotted names as state_dict() spells them
  std::map<std::string, std::string> metadata;  // e.g. TorchScript top-level int buffers
};

// Reads `<prefix>/data.pkl` with the restricted unpickler and resolves every tensor against the
// `<prefix>/data/<key>` storages (views into the mapped file for stored entries; non-contiguous
// tensors are copied into contiguous buffers). A torch.save dict that wraps the weights in
// "state_dict" (open_clip training checkpoints) is unwrapped. Throws Error naming the file.
TorchArchive read_torch_archive(const std::string& path);

}  // namespace clipkit
