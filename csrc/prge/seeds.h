#pragma once
// Per-step seeds of MeZO's seed trick: every noise draw is named by (seed, step, parameter,
// query) and regenerated from that name, never stored. Both RNGs (perturbation.h's torch
// generator and counter_rng.h) start from it.
#include <cstdint>

namespace prge {

// splitmix64 chained over (seed, step, param_index, query); top bit cleared so the
// result is a valid torch manual_seed on every frontend.
uint64_t derive_seed(uint64_t seed, int64_t step, int64_t param_index, int64_t query);

}  // namespace prge
