"""LoRA fine-tuning at a site: training examples from local labels, LoRA rounds, DP-SGD and the privacy ledger."""
