"""The LoRA training engine: recipe, optimisation, checkpoints and the loop, on any ``Backbone``."""
