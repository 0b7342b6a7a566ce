"""Lets PyPI's CUDA-only torchvision import on a CPU-only torch (test environments for ComfyUI).

Installed by tools/setup_env.sh as a ``.pth`` hook. PyPI's Linux torchvision is a CUDA build whose ``_C.so`` needs
``libc10_cuda.so``; on CPU torch its import dies registering fakes for ``torchvision::nms``/``qnms``, which also
breaks transformers and peft. Defining those two op schemas first lets its pure-Python parts import
(``torchvision.ops`` kernels stay unavailable). Does nothing on CUDA torch or a CPU torchvision.
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return spec
        lib_file = Path(next(iter(spec.submodule_search_locations))) / "_C.so"
        cuda_build = lib_file.is_file() and b"libc10_cuda.so" in lib_file.read_bytes()
        import torch

        if cuda_build and torch.version.cuda is None:
            lib = torch.library.Library("torchvision", "FRAGMENT")  # FRAGMENT: another shim may define it too
            for op in ("nms", "qnms"):
                if not hasattr(torch.ops.torchvision, op):
                    lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            sys.modules["_cpu_torchvision_shim_lib"] = lib  # keeps the registration alive
        return spec


sys.meta_path.insert(0, _Hook())
