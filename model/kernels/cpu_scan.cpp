// The compiled CPU scan (docs/mixers.md, "Compiled CPU kernel"): one pass over memory, time inner, channels outer.
//
// Every (sequence, block of channels) is one task; a task keeps its fp32 state in a local array
// and walks time, so a, b and h are each touched exactly once (12 bytes per fp32 element
// forward, 20 backward: the floor of docs/mixers.md, "Memory traffic"). Blocks are as wide as the channels
// allow (up to kMaxBlock), so each time step reads one long contiguous run per tensor, which
// the hardware prefetcher follows; channels are split further only to give every thread work.
// Tasks run on OpenMP threads.
// Channels are contiguous; batch and time strides are free (a time-invariant gate has stride 0).
// Complex tensors are interleaved (re, im) float pairs, as torch stores complex64.
//
// Built on first use by model/kernels/compiled.py (plain C ABI, loaded with ctypes, no torch
// headers, so it compiles in about a second); model/kernels/chunked.py is the fallback.

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

constexpr int64_t kMaxBlock = 2048;
constexpr int64_t kMinBlock = 64;

// Lanes per task: the whole row when there are enough sequences to share out, else split.
int64_t block_width(int64_t batch, int64_t lanes, int threads) {
  const int64_t wanted_tasks = 4 * static_cast<int64_t>(threads);
  const int64_t splits = batch >= wanted_tasks ? 1 : (wanted_tasks + batch - 1) / batch;
  const int64_t width = (lanes + splits - 1) / splits;
  return std::min(kMaxBlock, std::max(kMinBlock, (width + 15) / 16 * 16));
}

// Runs body(sequence, first lane, lanes) for every (sequence, block of lanes), on OpenMP threads.
template <typename Body>
void for_each_block(int64_t batch, int64_t lanes, int threads, Body body) {
  const int64_t block = block_width(batch, lanes, threads), blocks = (lanes + block - 1) / block;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t k = 0; k < blocks; ++k) {
      body(n, k * block, std::min(block, lanes - k * block));
    }
  }
}

// Visits lanes [0, width) in descending 16-lane groups, ascending within a group: the backward
// walks time backwards, and a stream that also runs backwards within each row is one the
// hardware prefetcher follows (1.4-1.5x faster than ascending rows at 1024x200x256 on our
// 2-core EPYC), while each group still vectorises.
template <typename Body>
inline void for_each_lane_descending(int64_t width, Body body) {
  constexpr int64_t kGroup = 16;
  for (int64_t start = (width - 1) / kGroup * kGroup; start >= 0; start -= kGroup) {
    const int64_t end = std::min(start + kGroup, width);
    for (int64_t w = start; w < end; ++w) body(w);
  }
}

inline float load(const float* p, int64_t i) { return p[i]; }

inline float load(const uint16_t* p, int64_t i) {
  uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline void store(float* p, int64_t i, float v) { p[i] = v; }

// Round to nearest even, as torch's float -> bfloat16 conversion does; NaN stays NaN.
inline void store(uint16_t* p, int64_t i, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    p[i] = static_cast<uint16_t>((bits >> 16) | 0x40u);
    return;
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  p[i] = static_cast<uint16_t>(bits >> 16);
}

struct Layout {
  int64_t batch, steps, channels;  // channels in floats (2 per complex channel)
  int64_t a_batch, a_time;         // a's strides in floats
  int64_t io_batch, io_time;       // strides of b / h / dh / db (same layout), in elements
};

// h_t = a_t * h_{t-1} + b_t.
template <typename IO>
void forward_real(const float* a, const IO* b, const float* h0, IO* h, Layout L, int threads) {
  for_each_block(L.batch, L.channels, threads, [&](int64_t n, int64_t d0, int64_t width) {
    float state[kMaxBlock];
    for (int64_t w = 0; w < width; ++w) state[w] = h0 ? h0[n * L.channels + d0 + w] : 0.0f;
    for (int64_t t = 0; t < L.steps; ++t) {
      const float* at = a + n * L.a_batch + t * L.a_time + d0;
      const int64_t io = n * L.io_batch + t * L.io_time + d0;
      for (int64_t w = 0; w < width; ++w) {
        state[w] = at[w] * state[w] + load(b, io + w);
        store(h, io + w, state[w]);
      }
    }
  });
}

template <typename IO>
void forward_complex(const float* a, const IO* b, const float* h0, IO* h, Layout L, int threads) {
  for_each_block(L.batch, L.channels / 2, threads, [&](int64_t n, int64_t c0, int64_t width) {
    float re[kMaxBlock], im[kMaxBlock];
    for (int64_t w = 0; w < width; ++w) {
      re[w] = h0 ? h0[n * L.channels + 2 * (c0 + w)] : 0.0f;
      im[w] = h0 ? h0[n * L.channels + 2 * (c0 + w) + 1] : 0.0f;
    }
    for (int64_t t = 0; t < L.steps; ++t) {
      const float* at = a + n * L.a_batch + t * L.a_time + 2 * c0;
      const int64_t io = n * L.io_batch + t * L.io_time + 2 * c0;
      for (int64_t w = 0; w < width; ++w) {
        const float ar = at[2 * w], ai = at[2 * w + 1];
        const float r = ar * re[w] - ai * im[w] + load(b, io + 2 * w);
        const float i = ar * im[w] + ai * re[w] + load(b, io + 2 * w + 1);
        re[w] = r;
        im[w] = i;
        store(h, io + 2 * w, r);
        store(h, io + 2 * w + 1, i);
      }
    }
  });
}

// Backward of the forward scan: g_t = dh_t + conj(a_{t+1}) g_{t+1}; db_t = g_t;
// da_t = g_t conj(h_{t-1}) with h_{-1} = h0 (or 0); dh0 = conj(a_0) g_0.
// da has b's layout but fp32; dh0 (fp32, [batch, channels]) is written when h0 is given.
// One row (time step) at a time; `previous` is h_{t-1}'s row (IO) or, at t = 0, the initial
// state (fp32), so the row loop has no branch and vectorises.
template <typename IO, typename Previous>
inline void backward_real_row(const IO* __restrict dh, const Previous* __restrict previous, const float* __restrict gate,
                              float* __restrict g, float* __restrict next_gate, IO* __restrict db,
                              float* __restrict da, int64_t width) {
  for_each_lane_descending(width, [&](int64_t w) {
    const float grad = load(dh, w) + next_gate[w] * g[w];
    g[w] = grad;
    store(db, w, grad);
    da[w] = grad * load(previous, w);
    next_gate[w] = gate[w];
  });
}

template <typename IO>
void backward_real(const float* a, const IO* h, const float* h0, const IO* dh, float* da, IO* db, float* dh0, Layout L,
                   int threads) {
  for_each_block(L.batch, L.channels, threads, [&](int64_t n, int64_t d0, int64_t width) {
    float g[kMaxBlock], next_gate[kMaxBlock], initial[kMaxBlock];
    for (int64_t w = 0; w < width; ++w) {
      g[w] = next_gate[w] = 0.0f;
      initial[w] = h0 ? h0[n * L.channels + d0 + w] : 0.0f;
    }
    for (int64_t t = L.steps - 1; t >= 0; --t) {
      const int64_t io = n * L.io_batch + t * L.io_time + d0;
      const float* gate = a + n * L.a_batch + t * L.a_time + d0;
      if (t > 0)
        backward_real_row(dh + io, h + io - L.io_time, gate, g, next_gate, db + io, da + io, width);
      else
        backward_real_row(dh + io, initial, gate, g, next_gate, db + io, da + io, width);
    }
    if (dh0)
      for (int64_t w = 0; w < width; ++w) dh0[n * L.channels + d0 + w] = next_gate[w] * g[w];
  });
}

// The complex row, on interleaved (re, im) pairs: g = dh + conj(a_next) g; da = g conj(previous).
inline void backward_complex_row(const float* __restrict dh, const float* __restrict previous,
                                 const float* __restrict gate, float* __restrict gr, float* __restrict gi,
                                 float* __restrict ar_next, float* __restrict ai_next, float* __restrict db,
                                 float* __restrict da, int64_t width) {
  for_each_lane_descending(width, [&](int64_t w) {
    const float r = dh[2 * w] + ar_next[w] * gr[w] + ai_next[w] * gi[w];
    const float i = dh[2 * w + 1] + ar_next[w] * gi[w] - ai_next[w] * gr[w];
    const float pr = previous[2 * w], pi = previous[2 * w + 1];
    gr[w] = r;
    gi[w] = i;
    db[2 * w] = r;
    db[2 * w + 1] = i;
    da[2 * w] = r * pr + i * pi;
    da[2 * w + 1] = i * pr - r * pi;
    ar_next[w] = gate[2 * w];
    ai_next[w] = gate[2 * w + 1];
  });
}

void backward_complex(const float* a, const float* h, const float* h0, const float* dh, float* da, float* db, float* dh0,
                      Layout L, int threads) {
  for_each_block(L.batch, L.channels / 2, threads, [&](int64_t n, int64_t c0, int64_t width) {
    float gr[kMaxBlock], gi[kMaxBlock], ar_next[kMaxBlock], ai_next[kMaxBlock], initial[2 * kMaxBlock];
    for (int64_t w = 0; w < width; ++w) {
      gr[w] = gi[w] = ar_next[w] = ai_next[w] = 0.0f;
      initial[2 * w] = h0 ? h0[n * L.channels + 2 * (c0 + w)] : 0.0f;
      initial[2 * w + 1] = h0 ? h0[n * L.channels + 2 * (c0 + w) + 1] : 0.0f;
    }
    for (int64_t t = L.steps - 1; t >= 0; --t) {
      const int64_t io = n * L.io_batch + t * L.io_time + 2 * c0;
      const float* gate = a + n * L.a_batch + t * L.a_time + 2 * c0;
      const float* previous = t > 0 ? h + io - L.io_time : initial;
      backward_complex_row(dh + io, previous, gate, gr, gi, ar_next, ai_next, db + io, da + io, width);
    }
    if (dh0)
      for (int64_t w = 0; w < width; ++w) {
        const int64_t j = n * L.channels + 2 * (c0 + w);
        dh0[j] = ar_next[w] * gr[w] + ai_next[w] * gi[w];
        dh0[j + 1] = ar_next[w] * gi[w] - ai_next[w] * gr[w];
      }
  });
}

Layout layout(int64_t batch, int64_t steps, int64_t channels, int64_t a_batch, int64_t a_time, int64_t io_batch,
              int64_t io_time) {
  return Layout{batch, steps, channels, a_batch, a_time, io_batch, io_time};
}

}  // namespace

// C ABI. `kind`: 0 real fp32 I/O, 1 real bf16 I/O, 2 complex64. Strides in floats for complex
// (`channels` counts floats too), in elements otherwise.
extern "C" {

int rotorec_scan_forward(int kind, const void* a, const void* b, const float* h0, void* h, int64_t batch, int64_t steps,
                         int64_t channels, int64_t a_batch, int64_t a_time, int64_t io_batch, int64_t io_time,
                         int threads) {
  const Layout L = layout(batch, steps, channels, a_batch, a_time, io_batch, io_time);
  const float* gate = static_cast<const float*>(a);
  switch (kind) {
    case 0: forward_real(gate, static_cast<const float*>(b), h0, static_cast<float*>(h), L, threads); return 0;
    case 1: forward_real(gate, static_cast<const uint16_t*>(b), h0, static_cast<uint16_t*>(h), L, threads); return 0;
    case 2: forward_complex(gate, static_cast<const float*>(b), h0, static_cast<float*>(h), L, threads); return 0;
    default: return 1;
  }
}

int rotorec_scan_backward(int kind, const void* a, const void* h, const float* h0, const void* dh, float* da, void* db,
                          float* dh0, int64_t batch, int64_t steps, int64_t channels, int64_t a_batch, int64_t a_time,
                          int64_t io_batch, int64_t io_time, int threads) {
  const Layout L = layout(batch, steps, channels, a_batch, a_time, io_batch, io_time);
  const float* gate = static_cast<const float*>(a);
  switch (kind) {
    case 0:
      backward_real(gate, static_cast<const float*>(h), h0, static_cast<const float*>(dh), da, static_cast<float*>(db), dh0, L,
                    threads);
      return 0;
    case 1:
      backward_real(gate, static_cast<const uint16_t*>(h), h0, static_cast<const uint16_t*>(dh), da,
                    static_cast<uint16_t*>(db), dh0, L, threads);
      return 0;
    case 2:
      backward_complex(gate, static_cast<const float*>(h), h0, static_cast<const float*>(dh), da, static_cast<float*>(db), dh0,
                       L, threads);
      return 0;
    default: return 1;
  }
}

}  // extern "C"
