"""Model engine: load a Qwen2.5-VL directory, answer prompts over frames, build the tiny test model.

Modules: `loading` (load_model), `generate` (generate_answers), `tiny` (build_tiny_model, ensure_tiny_model),
`warmup` (the tiny model's short training).
"""
