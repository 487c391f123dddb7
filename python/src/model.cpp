// clipkit.Model: loading, the image and text towers, preprocessing, and clipkit.tokenize.
#include <cstring>

#include "bindings.h"
#include "clipkit/error.h"
#include "clipkit/tokenizer.h"
#include "model/model_info_json.h"

namespace clipkit::python {

namespace {

// The fields of `clipkit info`, in the same order (the same JSON, read back as Python objects).
py::dict describe(const ModelInfo& info) {
  return py::module_::import("json").attr("loads")(model_info_json(info).dump());
}

py::array_t<float> encode_pixels(const Model& model, py::handle pixels) {
  if (!py::isinstance<py::array>(pixels))
    throw py::type_error("pixels: expected a float32 numpy array [n, 3, R, R], got " + type_name(pixels));
  auto arr = py::reinterpret_borrow<py::array>(pixels);
  if (!arr.dtype().is(py::dtype::of<float>()))
    throw py::type_error("pixels: expected a float32 array, got dtype " + py::str(arr.dtype()).cast<std::string>());
  const int r = model.preprocess_config().resolution;
  if (arr.ndim() != 4 || arr.shape(1) != 3 || arr.shape(2) != r || arr.shape(3) != r) {
    std::string shape = "(";
    for (py::ssize_t i = 0; i < arr.ndim(); ++i) shape += (i ? ", " : "") + std::to_string(arr.shape(i));
    shape += arr.ndim() == 1 ? ",)" : ")";
    throw py::value_error("pixels: expected shape [n, 3, " + std::to_string(r) + ", " + std::to_string(r) + "], got " + shape);
  }
  auto c = py::array_t<float, py::array::c_style>::ensure(arr);  // no copy when already contiguous
  const int64_t n = arr.shape(0);
  const int64_t dim = model.info().arch.embed_dim;
  if (n == 0) return py::array_t<float>(std::vector<py::ssize_t>{0, static_cast<py::ssize_t>(dim)});
  Embeddings e;
  {
    py::gil_scoped_release nogil;
    e = model.encode_images(c.data(), n, false);
  }
  return to_numpy(std::move(e));
}

}  // namespace

std::shared_ptr<Model> model_arg(py::handle obj, const std::string& what) {
  try {
    if (!obj.is_none()) return obj.cast<std::shared_ptr<Model>>();
  } catch (const py::cast_error&) {
  }
  throw py::type_error(what + ": expected a clipkit.Model (from clipkit.load), got " + type_name(obj));
}

void register_model(py::module_& m) {
  py::class_<Model, std::shared_ptr<Model>> cls(m, "Model", R"doc(
A loaded CLIP model: image tower (ViT or modified ResNet) and text tower.

Create one with :func:`clipkit.load`. A model is immutable once loaded: every method may be
called from several Python threads at once, and every computing method releases the GIL.
)doc");
  cls.def_property_readonly("info", [](const Model& self) { return describe(self.info()); }, R"doc(
The model description as a dict: the fields ``clipkit info`` prints (path, format,
architecture, parameter_count, weight_bytes, weight_dtype, compute_dtype, logit_scale,
fingerprint, kernels, preprocess; for a paired or multilingual text tower also text_model,
text_fingerprint and tokenizer).
)doc");
  cls.def_property_readonly("dim", [](const Model& self) { return self.info().arch.embed_dim; },
                            "Length of an embedding (the joint embedding width).");
  cls.def_property_readonly("resolution", [](const Model& self) { return self.preprocess_config().resolution; },
                            "Side of the square image input in pixels.");
  cls.def_property_readonly("logit_scale", &Model::logit_scale,
                            "exp(logit_scale): the factor CLIP multiplies cosine similarities by.");
  cls.def_property_readonly("fingerprint", [](const Model& self) { return self.info().fingerprint; },
                            "Stable hash of the architecture and weights (classifiers and indexes record it).");
  cls.def_property_readonly("path", [](const Model& self) { return self.info().path; }, "The file or folder loaded.");
  cls.def(
      "encode_image",
      [](const Model& self, py::object images, bool normalize, int batch_size) {
        return encode_images(self, images, normalize, batch_size);
      },
      py::arg("images"), py::arg("normalize") = false, py::arg("batch_size") = 16, R"doc(
Embeds images: float32 array [n, dim].

``images`` is one image or a list of them; an image is a file path (str or os.PathLike; JPEG,
PNG, WebP, BMP or GIF), a ``PIL.Image.Image`` (its pixels are read in its own mode, so the
result is the same as for the file it was opened from), or a uint8 numpy array [H, W, 3] (RGB),
[H, W, 4] (RGBA) or [H, W] (L). Every image goes through CLIP's preprocessing (bicubic resize of
the short side, center crop, normalisation), exactly as Pillow and torchvision do it.
``normalize`` L2-normalises each row; ``batch_size`` images go through the tower at once.
)doc");
  cls.def(
      "encode_pixels", [](const Model& self, py::object pixels) { return encode_pixels(self, pixels); },
      py::arg("pixels"), R"doc(
Embeds already preprocessed images: ``pixels`` is a float32 array [n, 3, R, R] (R =
``resolution``), the output of :meth:`preprocess` stacked; returns float32 [n, dim], not
normalised.
)doc");
  cls.def(
      "preprocess",
      [](const Model& self, py::object image) {
        if (!is_single_image(image))
          throw py::type_error(
              "image: expected a file path, a PIL.Image.Image or a uint8 numpy array [H, W, 3] / [H, W], got " +
              type_name(image));
        ImageSource src = image_source(image, "image");
        const PreprocessConfig& config = self.preprocess_config();
        const py::ssize_t r = config.resolution;
        std::vector<float> out(static_cast<size_t>(3 * r * r));
        {
          py::gil_scoped_release nogil;
          preprocess_source(src, config, out.data());
        }
        return to_numpy(std::move(out), {3, r, r});
      },
      py::arg("image"), R"doc(
CLIP's preprocessing of one image (any input :meth:`encode_image` takes): float32 [3, R, R],
normalised with the model's mean and std, pixel-exact to clip's Pillow + torchvision transform.
)doc");
  cls.def(
      "encode_text",
      [](const Model& self, py::object texts, bool normalize) {
        const std::vector<std::string> list = string_list(texts, "texts");
        const int64_t dim = self.info().arch.embed_dim;
        if (list.empty()) return py::array_t<float>(std::vector<py::ssize_t>{0, static_cast<py::ssize_t>(dim)});
        Embeddings e;
        {
          py::gil_scoped_release nogil;
          e = self.encode_texts(list, normalize);
        }
        return to_numpy(std::move(e));
      },
      py::arg("texts"), py::arg("normalize") = false, R"doc(
Embeds texts: float32 array [n, dim]. ``texts`` is a str or a list of str; each is tokenized as
:func:`clipkit.tokenize` does (over-long texts are truncated). ``normalize`` L2-normalises rows.
)doc");
  cls.def("__repr__", [](const Model& self) {
    const ModelInfo& i = self.info();
    return "<clipkit.Model " + i.arch.kind + " dim=" + std::to_string(i.arch.embed_dim) + " resolution=" +
           std::to_string(i.preprocess.resolution) + " dtype=" + i.compute_dtype + " path='" + i.path + "'>";
  });

  m.def(
      "_load",
      [](const std::string& path, const std::string& dtype, int threads, const std::string& activation,
         const std::string& convolution, const std::string& text_model, const std::string& tokenizer) {
        ModelOptions o;
        o.dtype = dtype;
        o.threads = threads;
        o.activation = activation;
        o.convolution = convolution;
        o.text_model = text_model;
        o.tokenizer = tokenizer;
        py::gil_scoped_release nogil;
        return Model::load(path, o);
      },
      py::arg("path"), py::arg("dtype"), py::arg("threads"), py::arg("activation"), py::arg("convolution"),
      py::arg("text_model") = "", py::arg("tokenizer") = "",
      "Loads a model (see clipkit.load).");

  m.def(
      "tokenize",
      [](py::object texts, int context_length, bool truncate) {
        const std::vector<std::string> list = string_list(texts, "texts");
        if (context_length < 2)
          throw py::value_error("context_length: must be at least 2 (start and end of text), got " +
                                std::to_string(context_length));
        std::vector<std::vector<int32_t>> rows;
        {
          py::gil_scoped_release nogil;
          rows = Tokenizer::instance().tokenize(list, context_length, truncate);
        }
        py::array_t<int32_t> out({static_cast<py::ssize_t>(rows.size()), static_cast<py::ssize_t>(context_length)});
        int32_t* dst = out.mutable_data();
        for (size_t i = 0; i < rows.size(); ++i)
          std::memcpy(dst + i * static_cast<size_t>(context_length), rows[i].data(), rows[i].size() * sizeof(int32_t));
        return out;
      },
      py::arg("texts"), py::arg("context_length") = 77, py::arg("truncate") = true, R"doc(
CLIP's tokenizer, as ``clip.tokenize``: int32 array [n, context_length] of ids (start of text,
byte-level BPE ids, end of text, zero padding). ``texts`` is a str or a list of str. Texts are
repaired as ftfy would, then cleaned and lower-cased. With ``truncate=False`` a text longer than
``context_length`` raises clipkit.Error; with ``truncate=True`` it is cut and ends with the
end-of-text id.
)doc");
}

}  // namespace clipkit::python
