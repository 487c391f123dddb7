// Shared pieces of the Python bindings: argument conversion with the errors users see, and the
// hand-over of engine results to numpy without copying.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "clipkit/embeddings.h"
#include "clipkit/image.h"
#include "clipkit/model.h"

namespace clipkit::python {

namespace py = pybind11;

// Each concept registers its classes and functions on the module.
void register_errors(py::module_& m);
void register_model(py::module_& m);
void register_zeroshot(py::module_& m);
void register_index(py::module_& m);

// A float32 numpy array [rows, dim] that takes over the rows' storage (no copy).
py::array_t<float> to_numpy(Embeddings&& e);
// A float32 numpy array of the given shape owning `data` (moved, no copy).
py::array_t<float> to_numpy(std::vector<float>&& data, std::vector<py::ssize_t> shape);

// "int", "numpy.ndarray", ... for error messages.
std::string type_name(py::handle obj);

// A str or os.PathLike as a path; nullopt for anything else.
bool as_path(py::handle obj, std::string* out);
// A str, or a list/tuple of str, as a list. `what` names the argument in the TypeError.
std::vector<std::string> string_list(py::handle obj, const std::string& what);
// A str/os.PathLike, or a list/tuple of them, as paths.
std::vector<std::string> path_list(py::handle obj, const std::string& what);

// One image as the engine takes it: a file still to be decoded, or pixels already in memory.
using ImageSource = std::variant<std::string, Image>;
// True for what encode_image accepts as one image (path, PIL image, uint8 array).
bool is_single_image(py::handle obj);
// Converts one item (needs the GIL). `what` names it in errors ("images[3]").
ImageSource image_source(py::handle obj, const std::string& what);
// Decodes (if needed) and preprocesses into `out` (3 * n * n floats). Runs without the GIL.
void preprocess_source(const ImageSource& src, const PreprocessConfig& config, float* out);

// Encodes any mix of image inputs in batches into a new [n, dim] array (normalised rows on
// request). Releases the GIL while decoding and computing.
py::array_t<float> encode_images(const Model& model, py::handle images, bool normalize, int batch_size,
                                 const std::string& what = "images");

// Before the first decoding of image files: keeps decoded photos and their resizing buffers in
// glibc's heap (keep_decode_buffers_in_heap) instead of fresh mappings per image, which halves
// the CPU of decoding camera-sized photos. A process-wide setting, applied once; the environment
// variable CLIPKIT_MALLOC_DEFAULTS=1 leaves the allocator as the interpreter set it.
void prepare_to_decode_files();

// A model argument: the Model object bound by register_model.
std::shared_ptr<Model> model_arg(py::handle obj, const std::string& what);

}  // namespace clipkit::python
