#!/usr/bin/env bash
# Creates (or updates) .venv with everything the demo and the tests need, from package registries only.
# Idempotent: a second run only checks. Used by the README quick start and by .ci/run.
#
# - torch: kept if already in .venv, else torch==2.13.0 (pin with TORCH_SPEC=...).
# - ltx-core (Lightricks' reference model, optional for users, needed by the tests and the headless CLI) is
#   installed without its torchaudio requirement: PyPI's torchaudio is a CUDA build that fails to import on CPU
#   torch, and nothing here uses ltx-core's audio VAE.
# - Debian's chromium for the browser test, when run as root with apt-get.
# - If a ComfyUI tree is found ($COMFYUI_PATH, or ~/.cache/comfyui-v0.33), its requirements are installed too
#   (torch pinned), with the two CPU workarounds its integration tests need: a torchvision import shim and
#   torchaudio's CUDA libraries moved aside so its pure-Python parts import.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
V=.venv/bin/python
PIP=("$V" -m pip install -q --disable-pip-version-check)

"$V" -c "import torch" 2>/dev/null || "${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
CONS=$(mktemp)
trap 'rm -f "$CONS"' EXIT
"$V" -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' > "$CONS"

# aiohttp: ComfyUI's web server library; the tests of the pack's routes need it also where no ComfyUI is found.
"${PIP[@]}" -c "$CONS" -r requirements.txt "pytest>=8" "psutil>=5" "aiohttp>=3.9"
"$V" -c "import ltx_core" 2>/dev/null || "${PIP[@]}" -c "$CONS" --no-deps "ltx-core>=1.0,<1.1"
"${PIP[@]}" -c "$CONS" accelerate "scipy>=1.14"

COMFY=""
for c in "${COMFYUI_PATH:-}" "$HOME/.cache/comfyui-v0.33"; do
    if [ -n "$c" ] && [ -f "$c/comfy/model_patcher.py" ]; then COMFY=$c; break; fi
done
if [ -n "$COMFY" ]; then
    echo "ComfyUI found at $COMFY: installing its requirements for the integration tests"
    "${PIP[@]}" -c "$CONS" -r "$COMFY/requirements.txt" requests
    SITE=$("$V" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if [ "$("$V" -c 'import torch; print(torch.version.cuda is None)')" = "True" ]; then
        cp tools/cpu_torchvision_shim.py "$SITE/cpu_torchvision_shim.py"
        echo "import cpu_torchvision_shim" > "$SITE/zz_cpu_torchvision_shim.pth"
        if ls "$SITE"/torchaudio/lib/*.so >/dev/null 2>&1; then
            mkdir -p "$SITE/torchaudio/lib_cuda_disabled"
            mv "$SITE"/torchaudio/lib/*.so "$SITE/torchaudio/lib_cuda_disabled/"
        fi
    fi
else
    echo "No ComfyUI tree found: the ComfyUI integration tests will be skipped (see README)."
fi
# The browser test of the live loss chart needs Debian's chromium; installed when we may (root with apt-get),
# otherwise that one test skips with a loud reason.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "chromium could not be installed: the browser test will be skipped"
    else
        echo "chromium not found (install Debian's 'chromium' as root): the browser test will be skipped"
    fi
fi
"$V" -c "import torch, safetensors, peft, transformers, einops, av, numpy, pydantic, yaml, PIL, ltx_core.model.transformer"
echo "environment ready: .venv"
