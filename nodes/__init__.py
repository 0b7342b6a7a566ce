"""All nodes of the pack, listed in one place.

Each module below defines ``NODES``, a list of V3 node classes derived from ``_node.PackNode`` (a user error a node
raises reaches ComfyUI without the frames below the node). Node ids carry our ``LtxLora`` prefix (``LTXV...``
belongs to ComfyUI core and Lightricks).
"""

from . import cache, dataset, lora, sweep, training

_MODULES = (dataset, lora, cache, training, sweep)

NODE_CLASSES = [cls for module in _MODULES for cls in module.NODES]
NODE_CLASS_MAPPINGS = {cls.define_schema().node_id: cls for cls in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.define_schema().node_id: cls.define_schema().display_name for cls in NODE_CLASSES}
