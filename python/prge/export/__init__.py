"""Fine-tuning through unmodified inference runtimes (ONNX Runtime, AOTInductor, ExecuTorch):
  step_module            the P-RGE step as one forward pass, mirroring the C++ trainer
  counter_rng            its integer-op RNG (the same integers as csrc/prge/counter_rng.h)
  run_data               the run's training batches at the step's static shape
  exporters              `prge export`: the step file, batches, initial B, export.json
  runners                one step a call through each runtime from Python
  train_through_runtime  `prge train --runtime`: the training loop over a runner"""
