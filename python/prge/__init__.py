"""prge: zeroth-order fine-tuning of LLMs with parallelized randomized gradient
estimation (P-RGE), using forward passes only. The math runs in the C++ core
(`prge._core`); this package wires configs, data, models and reports."""
import torch  # noqa: F401  (loads libtorch before the extension)

from prge._core import (  # noqa: F401
    AdapterOptions,
    ArchSpec,
    CausalLM,
    ConfigError,
    EstimatorOptions,
    OptimizerOptions,
    PerturbationPlan,
    PerturbationStream,
    TokenBatch,
    Trainer,
    counter_noise_rows,
    counter_step_key,
    counter_stream_key,
    derive_seed,
    load_run_config,
    parse_run_config,
    quantize_weight,
    quantized_weight_dequantize,
    scheduled_lr,
    supported_model_types,
)
from prge._core import cuda_built  # noqa: F401  (CUDA kernels and graphs compiled in)
from prge._core import IGNORE_INDEX, PROJECTIONS, QUANTIZED_WEIGHTS_FILE  # noqa: F401  (one source: the C++ core)

from prge._core import LlamaConfig, LlamaModel  # noqa: F401  (names from before the model seam)

__version__ = "0.1.0"
