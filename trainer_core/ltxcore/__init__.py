"""The headless backend: Lightricks' ltx-core (optional dependency, its own licence) as model, VAE and the tiny
random-weight checkpoints of the tests and the demo. The engine sees it only through ``trainer_core.backbone``.

ltx-core is imported inside the functions that need it (``model.require_ltx_core``), so importing this package
never fails for want of it.
"""
