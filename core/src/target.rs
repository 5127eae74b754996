//! Target specs: which layers a LoRA adapter adapts (filled in by the targets work).
