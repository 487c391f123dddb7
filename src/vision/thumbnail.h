// Thumbnails: small WebP pictures made with the project's decoders and Pillow-exact resampling,
// for the web page of `clipkit serve` and the evaluation report's gallery.
#pragma once

#include <string>

#include "clipkit/image.h"

namespace clipkit::vision {

// The size of the thumbnail of a width x height image: the long side brought to `side` (never
// enlarged), the short side scaled by the same factor and rounded, at least 1.
void thumbnail_size(int width, int height, int side, int* out_width, int* out_height);

// The thumbnail of `image` as WebP (quality 82), its long side at most `side`: EXIF orientation is
// expected to be applied already; modes other than RGBA are converted to RGB first (Pillow's
// convert("RGB")), then the image is resized with Pillow's BICUBIC resampling (resize_image);
// RGBA keeps its alpha.
std::string encode_thumbnail(const Image& image, int side);

}  // namespace clipkit::vision
