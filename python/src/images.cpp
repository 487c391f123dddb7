// Image inputs from Python: file paths, PIL images (their raw pixels in their own mode, so the
// resize runs exactly as Pillow's would) and uint8 numpy arrays; batched encoding into numpy.

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <exception>

#include "bindings.h"
#include "clipkit/error.h"
#include "model/ingest.h"

namespace clipkit::python {

namespace {

const char* const kImageKinds =
    "a file path, a PIL.Image.Image, or a uint8 numpy array [H, W, 3] (RGB), [H, W, 4] (RGBA) or [H, W] (L)";

bool is_pil_image(py::handle obj) {
  // Looked up once and kept for the life of the process (never released at exit).
  static PyObject* pil_image_type = []() -> PyObject* {
    try {
      return py::object(py::module_::import("PIL.Image").attr("Image")).release().ptr();
    } catch (const py::error_already_set&) {
      return nullptr;  // Pillow not installed: no PIL images can reach us
    }
  }();
  return pil_image_type && PyObject_IsInstance(obj.ptr(), pil_image_type) == 1;
}

std::string bytes_of(const py::object& b) { return b.cast<std::string>(); }

Image from_pil(py::handle obj, const std::string& what) {
  py::object img = py::reinterpret_borrow<py::object>(obj);
  std::string mode = img.attr("mode").cast<std::string>();
  if (mode.rfind("I;16", 0) == 0) {  // 16-bit gray variants: Pillow's own widening to mode I
    img = img.attr("convert")("I");
    mode = "I";
  }
  const auto size = img.attr("size").cast<std::pair<int, int>>();
  Image out;
  out.width = size.first;
  out.height = size.second;
  if (out.width <= 0 || out.height <= 0)
    throw py::value_error(what + ": the PIL image is empty (" + std::to_string(out.width) + "x" +
                          std::to_string(out.height) + ")");
  static const std::vector<std::pair<std::string, PixelMode>> kModes = {
      {"L", PixelMode::L},   {"LA", PixelMode::LA}, {"P", PixelMode::P},       {"RGB", PixelMode::RGB},
      {"RGBA", PixelMode::RGBA}, {"I", PixelMode::I}, {"1", PixelMode::Mono}, {"CMYK", PixelMode::CMYK}};
  auto it = std::find_if(kModes.begin(), kModes.end(), [&](const auto& p) { return p.first == mode; });
  if (it == kModes.end())
    throw py::value_error(what + ": PIL mode '" + mode +
                          "' is not supported (L, LA, P, RGB, RGBA, I, I;16, 1, CMYK); convert it first, e.g. "
                          "image.convert('RGB')");
  out.mode = it->second;
  const size_t pixels = static_cast<size_t>(out.width) * static_cast<size_t>(out.height);
  if (out.mode == PixelMode::I) {
    const std::string raw = bytes_of(img.attr("tobytes")());
    if (raw.size() != pixels * 4) throw py::value_error(what + ": unexpected raw size for PIL mode I");
    out.pixels32.resize(pixels);
    std::memcpy(out.pixels32.data(), raw.data(), raw.size());
    return out;
  }
  // Mode "1" is handed over as one byte per pixel (0 or 255), as the engine stores it.
  const std::string raw = out.mode == PixelMode::Mono ? bytes_of(img.attr("tobytes")("raw", "L"))
                                                       : bytes_of(img.attr("tobytes")());
  const size_t want = pixels * static_cast<size_t>(pixel_mode_channels(out.mode));
  if (raw.size() != want) throw py::value_error(what + ": unexpected raw size for PIL mode " + mode);
  out.pixels.assign(raw.begin(), raw.end());
  if (out.mode == PixelMode::P) {
    py::object pal = img.attr("getpalette")();
    if (!pal.is_none())
      for (auto v : pal) out.palette.push_back(static_cast<uint8_t>(v.cast<int>()));
    if (out.palette.size() > 256 * 3) out.palette.resize(256 * 3);
    out.palette.resize(out.palette.size() / 3 * 3);
  }
  return out;
}

Image from_array(py::handle obj, const std::string& what) {
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<uint8_t>()))
    throw py::type_error(what + ": expected a uint8 array (RGB [H, W, 3], RGBA [H, W, 4] or L [H, W]), got dtype " +
                         py::str(arr.dtype()).cast<std::string>());
  const py::ssize_t nd = arr.ndim();
  std::string shape = "(";
  for (py::ssize_t i = 0; i < nd; ++i) shape += (i ? ", " : "") + std::to_string(arr.shape(i));
  shape += nd == 1 ? ",)" : ")";
  const bool ok = (nd == 2 || (nd == 3 && (arr.shape(2) == 3 || arr.shape(2) == 4))) && arr.shape(0) > 0 &&
                  arr.shape(1) > 0;
  if (!ok)
    throw py::value_error(what + ": expected a uint8 array of shape [H, W, 3] (RGB), [H, W, 4] (RGBA) or [H, W] (L), got shape " +
                          shape);
  auto c = py::array_t<uint8_t, py::array::c_style>::ensure(arr);
  Image out;
  out.height = static_cast<int>(arr.shape(0));
  out.width = static_cast<int>(arr.shape(1));
  out.mode = nd == 2 ? PixelMode::L : arr.shape(2) == 3 ? PixelMode::RGB : PixelMode::RGBA;
  out.pixels.assign(c.data(), c.data() + c.size());
  return out;
}

}  // namespace

std::string type_name(py::handle obj) {
  py::handle t = reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr()));
  const std::string mod = py::str(t.attr("__module__")).cast<std::string>();
  const std::string name = py::str(t.attr("__qualname__")).cast<std::string>();
  return mod == "builtins" ? name : mod + "." + name;
}

bool as_path(py::handle obj, std::string* out) {
  if (py::isinstance<py::str>(obj)) {
    *out = obj.cast<std::string>();
    return true;
  }
  if (py::hasattr(obj, "__fspath__")) {
    py::object p = py::module_::import("os").attr("fspath")(obj);
    if (!py::isinstance<py::str>(p)) return false;  // bytes paths are not taken
    *out = p.cast<std::string>();
    return true;
  }
  return false;
}

std::vector<std::string> string_list(py::handle obj, const std::string& what) {
  if (py::isinstance<py::str>(obj)) return {obj.cast<std::string>()};
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
    throw py::type_error(what + ": expected a str or a list of str, got " + type_name(obj));
  std::vector<std::string> out;
  size_t i = 0;
  for (auto item : obj) {
    if (!py::isinstance<py::str>(item))
      throw py::type_error(what + "[" + std::to_string(i) + "]: expected str, got " + type_name(item));
    out.push_back(item.cast<std::string>());
    ++i;
  }
  return out;
}

std::vector<std::string> path_list(py::handle obj, const std::string& what) {
  std::string p;
  if (as_path(obj, &p)) return {p};
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
    throw py::type_error(what + ": expected a path (str or os.PathLike) or a list of paths, got " + type_name(obj));
  std::vector<std::string> out;
  size_t i = 0;
  for (auto item : obj) {
    if (!as_path(item, &p))
      throw py::type_error(what + "[" + std::to_string(i) + "]: expected a path (str or os.PathLike), got " + type_name(item));
    out.push_back(p);
    ++i;
  }
  return out;
}

bool is_single_image(py::handle obj) {
  std::string p;
  return as_path(obj, &p) || py::isinstance<py::array>(obj) || is_pil_image(obj);
}

ImageSource image_source(py::handle obj, const std::string& what) {
  std::string p;
  if (as_path(obj, &p)) return p;
  if (py::isinstance<py::array>(obj)) return from_array(obj, what);
  if (is_pil_image(obj)) return from_pil(obj, what);
  throw py::type_error(what + ": expected " + std::string(kImageKinds) + ", got " + type_name(obj));
}

void prepare_to_decode_files() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* keep = std::getenv("CLIPKIT_MALLOC_DEFAULTS");
    if (keep == nullptr || std::string(keep).empty() || std::string(keep) == "0") keep_decode_buffers_in_heap();
  });
}

void preprocess_source(const ImageSource& src, const PreprocessConfig& config, float* out) {
  if (const auto* path = std::get_if<std::string>(&src))
    preprocess(decode_image_file(*path), config, out);
  else
    preprocess(std::get<Image>(src), config, out);
}

py::array_t<float> encode_images(const Model& model, py::handle images, bool normalize, int batch_size,
                                 const std::string& what) {
  if (batch_size < 1) throw py::value_error("batch_size: must be at least 1, got " + std::to_string(batch_size));
  py::list items;
  if (is_single_image(images)) {
    items.append(images);
  } else if (py::isinstance<py::list>(images) || py::isinstance<py::tuple>(images)) {
    for (auto item : images) items.append(item);
  } else {
    throw py::type_error(what + ": expected " + std::string(kImageKinds) + ", or a list of them, got " + type_name(images));
  }
  const int64_t n = static_cast<int64_t>(items.size());
  const PreprocessConfig& config = model.preprocess_config();
  const int64_t dim = model.info().arch.embed_dim;
  py::array_t<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(dim)});
  float* dst = out.mutable_data();
  // The sources are converted (with the GIL) a few batches at a time; each group then goes through
  // the ingest pipeline without it: decoding the next batches while the model runs.
  const int64_t group = 8LL * batch_size;
  for (int64_t start = 0; start < n; start += group) {
    const int64_t g = std::min<int64_t>(group, n - start);
    std::vector<ImageSource> sources;
    sources.reserve(static_cast<size_t>(g));
    for (int64_t i = 0; i < g; ++i)
      sources.push_back(image_source(items[static_cast<size_t>(start + i)],
                                     what + "[" + std::to_string(start + i) + "]"));
    if (std::any_of(sources.begin(), sources.end(), [](const ImageSource& s) { return s.index() == 0; }))
      prepare_to_decode_files();
    py::gil_scoped_release nogil;
    IngestOptions opt;
    opt.batch_size = batch_size;
    run_image_ingest(
        static_cast<size_t>(g), config,
        [&](size_t i) -> Image {
          const ImageSource& src = sources[i];
          if (const auto* path = std::get_if<std::string>(&src)) return decode_image_file(*path);
          return std::get<Image>(src);
        },
        [&](IngestBatch& b) {
          if (!b.failures.empty()) std::rethrow_exception(b.failures.front().second);  // the first, in input order
          const Embeddings emb = model.encode_images(b.pixels.data(), b.rows(), normalize);
          std::memcpy(dst + (start + static_cast<int64_t>(b.begin)) * dim, emb.data.data(),
                      static_cast<size_t>(b.rows() * dim) * sizeof(float));
        },
        opt);
  }
  return out;
}

py::array_t<float> to_numpy(std::vector<float>&& data, std::vector<py::ssize_t> shape) {
  if (data.empty()) return py::array_t<float>(shape);
  auto* holder = new std::vector<float>(std::move(data));
  py::capsule owner(holder, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>(shape, holder->data(), owner);
}

py::array_t<float> to_numpy(Embeddings&& e) {
  return to_numpy(std::move(e.data), {static_cast<py::ssize_t>(e.rows), static_cast<py::ssize_t>(e.dim)});
}

}  // namespace clipkit::python
