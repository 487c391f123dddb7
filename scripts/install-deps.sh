#!/usr/bin/env bash
# Installs every Debian package clipkit needs to build, test and benchmark.
# Idempotent: packages already present are left alone.
#   scripts/install-deps.sh          build + test dependencies
#   scripts/install-deps.sh --dev    also the optional developer tools used by bench/compare (PyTorch,
#                                    ONNX; its ONNX Runtime side needs Node.js with npm, not installed here)
#                                    gcovr for scripts/coverage.sh, and libmicrohttpd for
#                                    bench/compare_transports.sh
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache pkg-config clang libclang-rt-14-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  libdnnl-dev libopenblas-dev
  libjpeg62-turbo-dev libpng-dev libwebp-dev libgif-dev zlib1g-dev
  libfaiss-dev libsqlite3-dev
  libopenmpi-dev openmpi-bin
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libboost-dev libssl-dev libspdlog-dev libfmt-dev
  libutf8proc-dev libsentencepiece-dev
  python3-pil python3-numpy
  chromium chromium-driver python3-selenium
  pybind11-dev python3-pybind11 python3-dev python3-pytest python3-venv python3-pip python3-setuptools python3-wheel
)
if [[ "${1:-}" == "--dev" ]]; then
  packages+=(python3-torch python3-onnx gcovr libmicrohttpd-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi
