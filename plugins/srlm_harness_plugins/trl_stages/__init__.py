"""Training stages on TRL: SFT (full and LoRA), distillation (traces and logits), GRPO,
rejection-sampling fine-tuning, and what they share (model loading, data preparation, progress)."""
