/* Deterministic PRNG: xoshiro256** seeded by splitmix64 (Blackman & Vigna).
 * Same seed, same sequence on every machine. */
#ifndef CX_RNG_H
#define CX_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
    int has_spare;
    double spare;
} cx_rng;

static inline uint64_t cx_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void cx_rng_seed(cx_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = cx_splitmix64(&x);
    r->has_spare = 0;
    r->spare = 0;
}

static inline uint64_t cx_rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* One step of xoshiro256** on a bare state (shared by cx_rng and the
 * bootstrap's documented per-resample generator). */
static inline uint64_t cx_xoshiro_next(uint64_t s[4])
{
    uint64_t result = cx_rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = cx_rng_rotl(s[3], 45);
    return result;
}

static inline uint64_t cx_rng_next(cx_rng *r) { return cx_xoshiro_next(r->s); }

/* Uniform double in [0, 1) with 53 random bits. */
static inline double cx_rng_uniform(cx_rng *r) { return (cx_rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n) without modulo bias (Lemire). */
static inline uint64_t cx_rng_below(cx_rng *r, uint64_t n)
{
    if (n <= 1)
        return 0;
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = cx_rng_next(r);
        __uint128_t m = (__uint128_t)x * n;
        if ((uint64_t)m >= threshold)
            return (uint64_t)(m >> 64);
    }
}

/* Standard normal (Box-Muller, polar-free form). */
static inline double cx_rng_normal(cx_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1, u2;
    do
        u1 = cx_rng_uniform(r);
    while (u1 <= 0.0);
    u2 = cx_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

#endif
