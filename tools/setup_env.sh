#!/usr/bin/env bash
# Creates (or updates) .venv with everything the demo and the tests need, from package registries only.
# Idempotent: a second run only checks. Used by the README quick start and by .ci/run.
#
# - torch: kept if already in .venv, else torch==2.13.0 (pin with TORCH_SPEC=...). Everything else gets the
#   newest release requirements.txt allows, as a user's ComfyUI install does; the resolved versions are printed.
# - The pack's `trainer_core` as an editable install (only that package), so `python -m trainer_core` and the
#   `ltx-lora` console script work from any folder.
# - ltx-core (Lightricks' reference model, optional for users, needed by the tests and the headless CLI) is
#   installed without its torchaudio requirement: PyPI's torchaudio is a CUDA build that fails to import on CPU
#   torch, and nothing here uses ltx-core's audio VAE.
# - ComfyUI for the integration tests: the tree around the pack (ComfyUI/custom_nodes/<pack>), $COMFYUI_PATH or
#   ~/.cache/comfyui-v0.33 gets its requirements installed; where none exists and this project's offline copy of
#   ComfyUI v0.33 sits beside the clone (../shared/comfyui, as on CI), it is unpacked to ~/.cache/comfyui-v0.33.
# - Debian's chromium for the browser test, system-wide, only when run as root with apt-get; it says so first,
#   and SKIP_CHROMIUM=1 skips it (that one test then skips with a loud reason).
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$(pwd)
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
V=$HERE/.venv/bin/python
# pip's own conflict check is off: it would print ltx-core's torchaudio, left out on purpose (below), as a red
# ERROR on every upgrade. The whole environment is checked once at the end instead.
PIP=("$V" -m pip install -q --disable-pip-version-check --no-warn-conflicts)

"$V" -m pip show -q torch >/dev/null 2>&1 || "${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}" numpy
CONS=$(mktemp)
trap 'rm -f "$CONS"' EXIT
echo "torch==$("$V" -m pip show torch | sed -n 's/^Version: //p' | cut -d+ -f1)" > "$CONS"

# einops, accelerate, scipy and transformers are ltx-core's requirements but torchaudio (ltx-core is installed
# without dependencies below); the pack itself imports none of them (README, "Dependencies").
"${PIP[@]}" -c "$CONS" --upgrade --upgrade-strategy only-if-needed -r requirements.txt \
    "pytest>=8" "psutil>=5" einops accelerate "scipy>=1.14" "transformers>=4.52"
# `python -m trainer_core` and the `ltx-lora` console script from any folder: an editable install that maps the
# trainer_core package only (pyproject), never the repo root, whose nodes/ would shadow ComfyUI's `nodes` module.
if [ "$(cd / && "$V" -c 'import trainer_core, os; print(os.path.dirname(trainer_core.__file__))' 2>/dev/null)" \
        != "$HERE/trainer_core" ] || [ ! -x .venv/bin/ltx-lora ]; then
    "${PIP[@]}" --no-deps -e . 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
fi

COMFY=""
for c in "${COMFYUI_PATH:-}" "$HERE/../.." "$HOME/.cache/comfyui-v0.33"; do
    if [ -n "$c" ] && [ -f "$c/comfy/model_patcher.py" ]; then COMFY=$(cd "$c" && pwd); break; fi
done
SHARED_SETUP=$HERE/../shared/comfyui/setup.sh
if [ -f "$SHARED_SETUP" ]; then
    COMFY=${COMFY:-$HOME/.cache/comfyui-v0.33}
    echo "ComfyUI v0.33 for the integration tests: $COMFY, set up from the project's offline copy ($SHARED_SETUP)"
    LOG=$(mktemp)
    if ! bash "$SHARED_SETUP" "$COMFY" "$V" >"$LOG" 2>&1; then
        cat "$LOG" >&2; echo "error: ComfyUI setup from $SHARED_SETUP failed (output above)" >&2; exit 1
    fi
    grep -v "^WARNING: Location 'file:" "$LOG" || true  # this machine's pip config names absent mirrors
    rm -f "$LOG"
elif [ -n "$COMFY" ]; then
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
# Last, so no later install reports its missing torchaudio as a conflict.
"$V" -m pip show -q ltx-core >/dev/null 2>&1 || "${PIP[@]}" -c "$CONS" --no-deps "ltx-core>=1.0,<1.1"
BROKEN=$("$V" -m pip check 2>&1 | grep -vE "^No broken requirements|^WARNING: Location 'file:" \
    | grep -vE "^ltx-core [^ ]+ requires torchaudio, which is not installed\.$" || true)
if [ -n "$BROKEN" ]; then
    echo "error: broken requirements in .venv (pip check):" >&2; echo "$BROKEN" >&2; exit 1
fi

if ! command -v chromium >/dev/null 2>&1; then
    if [ "${SKIP_CHROMIUM:-0}" = "1" ]; then
        echo "SKIP_CHROMIUM=1: chromium not installed, the browser test will be skipped"
    elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Debian's chromium system-wide for the browser test (SKIP_CHROMIUM=1 skips this)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) \
            || echo "chromium could not be installed: the browser test will be skipped"
    else
        echo "chromium not found (install Debian's 'chromium' as root): the browser test will be skipped"
    fi
fi
"$V" -c "import torch, safetensors, av, numpy, pydantic, yaml, PIL, ltx_core.model.transformer"
echo "Resolved versions:"
"$V" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(torch|safetensors|av|numpy|pydantic|pyyaml|pillow|aiohttp|pytest|ltx-core|comfy-aimdo|comfy-kitchen)==' \
    | sed 's/^/  /'
echo "environment ready: .venv"
