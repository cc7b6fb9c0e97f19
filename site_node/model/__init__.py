"""Model engine: load a Qwen2.5-VL directory (`loading`), answer prompts over frames (`generate`), build the tiny test model (`tiny`, `warmup`)."""
