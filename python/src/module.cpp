// The `clipkit._clipkit` extension module: errors, then one registration per concept.
#include "bindings.h"

#include "clipkit/error.h"
#include "clipkit/version.h"

namespace clipkit::python {

namespace {
PyObject* g_error = nullptr;  // clipkit.Error, alive for the whole process

// The code as the enumerator's name, e.g. "NotFound".
const char* code_identifier(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArgument: return "InvalidArgument";
    case ErrorCode::NotFound: return "NotFound";
    case ErrorCode::Io: return "Io";
    case ErrorCode::Format: return "Format";
    case ErrorCode::Shape: return "Shape";
    case ErrorCode::Limit: return "Limit";
    case ErrorCode::Mismatch: return "Mismatch";
    case ErrorCode::Internal: return "Internal";
  }
  return "Internal";
}

}  // namespace

void register_errors(py::module_& m) {
  g_error = PyErr_NewExceptionWithDoc(
      "clipkit.Error",
      "An error reported by the clipkit engine: the same one-line message the command line prints.\n\n"
      "Subclass of RuntimeError. ``code`` holds the kind of failure as a string: InvalidArgument,\n"
      "NotFound, Io, Format, Shape, Limit, Mismatch or Internal.",
      PyExc_RuntimeError, nullptr);
  if (!g_error) throw py::error_already_set();
  m.add_object("Error", py::handle(g_error));
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const clipkit::Error& e) {
      py::object exc = py::reinterpret_borrow<py::object>(g_error)(e.what());
      exc.attr("code") = code_identifier(e.code());
      PyErr_SetObject(g_error, exc.ptr());
    }
  });
}

}  // namespace clipkit::python

PYBIND11_MODULE(_clipkit, m) {
  using namespace clipkit::python;
  m.doc() = "Native part of the clipkit package (use the `clipkit` package, not this module).";
  m.attr("__version__") = CLIPKIT_VERSION_STRING;
  register_errors(m);
  register_model(m);
  register_zeroshot(m);
  register_index(m);
}
