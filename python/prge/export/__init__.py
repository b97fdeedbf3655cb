"""Fine-tuning through unmodified inference engines: the P-RGE step exported as one
forward pass (step_module), its integer-op RNG (counter_rng), runtimes (ONNX Runtime,
AOTInductor) and the `prge export` / `prge train --engine` driver (engine)."""
