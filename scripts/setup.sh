#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for whispertune: system audio tools, a virtual environment
# in .venv, and the package with its embedded models. Safe to run again (it skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v text2wave >/dev/null || need_apt+=(festival)
[ -d /usr/share/festival/voices/marathi ] || need_apt+=(festvox-mr-nsk)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${need_apt[*]} with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_install() {  # pip, without the noise of this machine's extra local indexes
  .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}
# Every version comes from constraints.txt, the tested set (pyproject.toml only states ranges).
# torch first, on its own, so that the CPU build is the one that lands.
torch_pin=$(grep -m1 '^torch==' constraints.txt)
pip_install -c constraints.txt "$torch_pin"
pip_install -c constraints.txt -e ".[embedded,serve,dev]"
.venv/bin/python -c "import torch, whispertune; print('setup: ok, torch', torch.__version__, 'whispertune', whispertune.__version__)"
