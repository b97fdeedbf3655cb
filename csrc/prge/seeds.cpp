#include "prge/seeds.h"

namespace prge {
namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

uint64_t derive_seed(uint64_t seed, int64_t step, int64_t param_index, int64_t query) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ static_cast<uint64_t>(step));
  h = splitmix64(h ^ static_cast<uint64_t>(param_index));
  h = splitmix64(h ^ static_cast<uint64_t>(query));
  return h & 0x7fffffffffffffffULL;
}

}  // namespace prge
