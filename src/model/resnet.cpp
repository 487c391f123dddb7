// Modified-ResNet image tower. Placeholder until the ResNet encoder lands: loading a ResNet
// checkpoint reports that the tower is not available in this build.
#include "clipkit/error.h"
#include "model/encoder.h"

namespace clipkit {

std::unique_ptr<ImageEncoder> make_resnet_encoder(const Checkpoint& ckpt, const Architecture&, const ModelOptions&) {
  throw Error(ErrorCode::Format, "checkpoint '" + ckpt.path + "' holds a ResNet image tower, which this build cannot run yet");
}

}  // namespace clipkit
