"""LoRA adapters for training: target selection and hook-based adapters that never modify the base model."""
