// The NCF tower of sparkrec.models.decomposed_ncf fused into one pass per (user, item) pair: a
// pair's activations stay in registers instead of the multi-MiB [width, pairs] tiles the torch
// path writes and reads back once per layer (measured 2.1x the torch path's block on one core).
// sparkrec/models/native.py compiles it on the host that runs it (-march=native) and falls back
// to the torch path, which stays the reference, when it cannot.
//
// Per pair (u, i), with item-major floors F_l [w_l, num_items] (each ReLU's per-item shift):
//   h_0 = max(a_u, F_0[:, i]);  h_{l+1} = max(W_l h_l, F_{l+1}[:, i]);  scores[u, i] += out . h_L
// for LANES items of one user at a time (one vector per activation).
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

namespace {
#ifdef __AVX512F__
constexpr int LANES = 16;
#else
constexpr int LANES = 8;
#endif
constexpr int MAX_WIDTH = 256;
constexpr int OUTPUTS = 8;       // output rows computed together: independent FMA chains share h[k]
constexpr int ITEM_BLOCK = 256;  // items whose floors (sum of widths x 1 KiB) stay cached across users
typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

inline vec load(const float *p, int valid) {
    vec v = {};
    if (valid == LANES)
        std::memcpy(&v, p, sizeof v);  // one unaligned load
    else
        std::memcpy(&v, p, sizeof(float) * valid);
    return v;
}

// torch.maximum's semantics: a NaN on either side gives NaN (a diverged model must not rank).
inline vec vmax(vec a, vec b) { return (a > b) | (a != a) ? a : b; }

struct Tower {
    int num_layers;
    const int *widths;
    const float *user_first;  // [batch, widths[0]]
    const float *const *floors;
    long floor_stride, floor_offset;
    const float *const *weights;
    const float *out;
    float *scores;  // [batch, items], row-major
    int items;
};

void score_users(const Tower &t, int first_user, int end_user) {
    vec buf_a[MAX_WIDTH], buf_b[MAX_WIDTH];
    for (int block = 0; block < t.items; block += ITEM_BLOCK) {
        const int block_end = std::min(t.items, block + ITEM_BLOCK);
        for (int u = first_user; u < end_user; ++u) {
            const float *a = t.user_first + (long)u * t.widths[0];
            float *row = t.scores + (long)u * t.items;
            for (int i = block; i < block_end; i += LANES) {
                const int valid = std::min(LANES, block_end - i);
                const long col = t.floor_offset + i;
                vec *h = buf_a, *g = buf_b;
                for (int k = 0; k < t.widths[0]; ++k)
                    h[k] = vmax(a[k] + vec{}, load(t.floors[0] + k * t.floor_stride + col, valid));
                for (int l = 0; l < t.num_layers; ++l) {
                    const int w_in = t.widths[l], w_out = t.widths[l + 1];
                    const float *w = t.weights[l], *floor = t.floors[l + 1] + col;
                    int j = 0;
                    for (; j + OUTPUTS <= w_out; j += OUTPUTS) {
                        vec acc[OUTPUTS] = {};
                        for (int k = 0; k < w_in; ++k)
                            for (int m = 0; m < OUTPUTS; ++m) acc[m] += w[(j + m) * w_in + k] * h[k];
                        for (int m = 0; m < OUTPUTS; ++m)
                            g[j + m] = vmax(acc[m], load(floor + (j + m) * t.floor_stride, valid));
                    }
                    for (; j < w_out; ++j) {
                        vec acc = {};
                        for (int k = 0; k < w_in; ++k) acc += w[j * w_in + k] * h[k];
                        g[j] = vmax(acc, load(floor + j * t.floor_stride, valid));
                    }
                    std::swap(h, g);
                }
                vec s = {};
                for (int j = 0; j < t.widths[t.num_layers]; ++j) s += t.out[j] * h[j];
                if (valid == LANES) {
                    const vec total = load(row + i, LANES) + s;
                    std::memcpy(row + i, &total, sizeof total);
                } else {
                    float lanes[LANES];
                    std::memcpy(lanes, &s, sizeof s);
                    for (int p = 0; p < valid; ++p) row[i + p] += lanes[p];
                }
            }
        }
    }
}
}  // namespace

// Adds the tower's score of every (user, item) pair to scores [batch, items]; users split over
// `threads` threads. Returns -1 (nothing written) when a layer is wider than MAX_WIDTH.
extern "C" int sparkrec_ncf_tower(int batch, int items, int num_layers, const int *widths,
                                  const float *user_first, const float *const *floors,
                                  long floor_stride, long floor_offset, const float *const *weights,
                                  const float *out, float *scores, int threads) {
    for (int l = 0; l <= num_layers; ++l)
        if (widths[l] > MAX_WIDTH) return -1;
    const Tower t{num_layers, widths, user_first, floors, floor_stride, floor_offset, weights, out, scores, items};
    threads = std::max(1, std::min(threads, batch));
    std::vector<std::thread> workers;
    for (int n = 1; n < threads; ++n)
        workers.emplace_back(score_users, std::cref(t), (long)batch * n / threads, (long)batch * (n + 1) / threads);
    score_users(t, 0, batch / threads);
    for (auto &w : workers) w.join();
    return 0;
}
