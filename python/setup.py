"""Installs the clipkit Python package (``pip install ./python``).

The extension module is built by the project's CMake build: an existing build folder is reused
(``CLIPKIT_BUILD_DIR``, else the repository's ``build/`` when it was configured for this
interpreter's ABI), otherwise a Release build of just the Python target is configured in
``build-python/``. Nothing is downloaded.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def version():
    text = open(os.path.join(ROOT, "include", "clipkit", "version.h")).read()
    return re.search(r'CLIPKIT_VERSION_STRING "([^"]+)"', text).group(1)


def configured_for_this_python(build_dir):
    """True when build_dir is a configured build whose Python has this interpreter's ABI."""
    cache = os.path.join(build_dir, "CMakeCache.txt")
    if not os.path.exists(cache):
        return False
    m = re.search(r"^Python_EXECUTABLE:\w+=(.*)$", open(cache).read(), re.M)
    if not m:
        return False
    try:
        out = subprocess.run([m.group(1), "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return out == sysconfig.get_config_var("EXT_SUFFIX")


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.environ.get("CLIPKIT_BUILD_DIR")
        if not build_dir:
            build_dir = os.path.join(ROOT, "build")
            if not configured_for_this_python(build_dir):
                build_dir = os.path.join(ROOT, "build-python")
        build_dir = os.path.abspath(build_dir)
        if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            if shutil.which("ccache"):
                generator += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
            subprocess.check_call(["cmake", "-S", ROOT, "-B", build_dir, *generator, "-DCMAKE_BUILD_TYPE=Release",
                                   "-DCLIPKIT_BUILD_TESTS=OFF", "-DCLIPKIT_BUILD_BENCH=OFF",
                                   "-DCLIPKIT_BUILD_PYTHON=ON", "-DPython_EXECUTABLE=" + sys.executable])
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "clipkit_python", "-j", jobs])
        built = glob.glob(os.path.join(build_dir, "python", "clipkit", "_clipkit*" + sysconfig.get_config_var("EXT_SUFFIX")))
        if not built:
            raise RuntimeError("the CMake build in %s did not produce the clipkit extension for this Python" % build_dir)
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built[0], target)


setup(
    name="clipkit",
    version=version(),
    description="A native CLIP engine: image and text embeddings, zero-shot classification, image search",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.8",
    packages=["clipkit"],
    package_data={"clipkit": ["py.typed", "*.pyi"]},
    ext_modules=[CMakeExtension("clipkit._clipkit")],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=["numpy"],
    extras_require={"pil": ["Pillow"]},
    zip_safe=False,
)
