"""The GPU lanes' CUDA kernels (CuPy), compiled once per process: letterbox + normalise, class
votes with the model's doubt, burn regions (union-find), the picture checks' sums, mask restore,
class counts, tint, and the out-of-domain sums. processing/runtime.py launches them on each lane's
stream into its preallocated buffers; tests/test_gpu_pipeline.py holds them to the host reference
functions. CuPy is imported only when they are compiled, so this module imports without CUDA.
"""
from __future__ import annotations

import threading

# Written out with round-to-nearest intrinsics (no fused multiply-add), in the precision the
# reference functions end up in (float64 for the bilinear weights, as CuPy promotes
# float32 - int32 there; float32 for normalisation and tint), so that the device path and the
# reference agree to the bit. Arrays marked `raw` are contiguous and read through plain pointers.
_PREPROCESS_SRC = r"""
const int x = i % S;
int t = i / S;
const int y = t % S;
t /= S;
const int c = t % 3;
const int b = t / 3;
const int yy = y - top;
const int xx = x - left;
if (yy < 0 || yy >= bh || xx < 0 || xx >= bw) {
    out = 0.0f;
} else {
    const unsigned char* img = &frames[0] + (size_t)b * H * W * 3;
    const int ya = (&row0[0])[yy], yb = (&row1[0])[yy];
    const int xa = (&col0[0])[xx], xb = (&col1[0])[xx];
    const double fy = (&roww[0])[yy], fx = (&colw[0])[xx];
    const double p00 = img[((size_t)ya * W + xa) * 3 + c];
    const double p01 = img[((size_t)ya * W + xb) * 3 + c];
    const double p10 = img[((size_t)yb * W + xa) * 3 + c];
    const double p11 = img[((size_t)yb * W + xb) * 3 + c];
    const double gx = __dsub_rn(1.0, fx);
    const double gy = __dsub_rn(1.0, fy);
    const double upper = __dadd_rn(__dmul_rn(p00, gx), __dmul_rn(p01, fx));
    const double lower = __dadd_rn(__dmul_rn(p10, gx), __dmul_rn(p11, fx));
    double v = __dadd_rn(__dmul_rn(upper, gy), __dmul_rn(lower, fy));
    v = __dadd_rn(v, 0.5);
    v = fmin(fmax(v, 0.0), 255.0);
    const float q = (float)(unsigned char)v;
    out = __fmul_rn(__fsub_rn(q, (&mean[0])[c]), (&inv_std[0])[c]);
}
"""

_ARGMAX_SRC = r"""
// logits (B, C, S*S) -> index of the first maximum over C, as argmax does; for a burn class also
// whether its probability (softmax max, 1 / sum exp(l - max), as clinical.assessability has it)
// is below min_conf: the model is unsure of that pixel's depth
const int b = i / SS;
const int p = i % SS;
const T* base = &logits[0] + (size_t)b * C * SS + p;
float best = (float)base[0];
int arg = 0;
for (int k = 1; k < C; ++k) {
    const float v = (float)base[(size_t)k * SS];
    if (v > best) { best = v; arg = k; }
}
mask = (unsigned char)arg;
unsigned char doubt = 0;
if (arg >= first_burn && arg <= last_burn) {
    float z = 0.0f;
    for (int k = 0; k < C; ++k) z += expf((float)base[(size_t)k * SS] - best);
    doubt = (1.0f / z) < min_conf;
}
unsure = doubt;
"""

# What is shown and counted: the class mask with burn the model is unsure of, and burn regions
# smaller than min_region_px (8-connected, one depth), set to 255 (UNCERTAIN), as
# clinical.assessability.uncertain_burn has it; the class mask itself stays as the model said
# (validation and exports use it, as on the CPU lanes). Connected components by union-find over the picture
# of each square mask (the letterbox's top, left, height, width), with a fixed number of launches
# and no host round trip. blockIdx.y: the frame of the group; labels are frame-local indices.
_REGIONS_SRC = r"""
__device__ int root_of(const int* label, int x) {
    int up = label[x];
    while (up != x) { x = up; up = label[x]; }
    return x;
}
__device__ void unite(int* label, int a, int b) {
    while (true) {
        a = root_of(label, a);
        b = root_of(label, b);
        if (a == b) return;
        if (a < b) { const int t = a; a = b; b = t; }
        const int was = atomicMin(&label[a], b);
        if (was == a) return;  // a was a root: now it hangs under b
        a = was;               // a had been hung elsewhere meanwhile: join that tree with b too
    }
}
#define PICTURE_LOOP \
    const size_t base = (size_t)blockIdx.y * S * S; \
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < bh * bw; p += gridDim.x * blockDim.x) { \
        const int y = p / bw, x = p % bw; \
        const int idx = (top + y) * S + left + x;
#define IS_BURN(c) ((c) >= first_burn && (c) <= last_burn)

extern "C" __global__ void regions_init(int* label, int* area, const int S, const int top, const int left,
                                        const int bh, const int bw) {
    PICTURE_LOOP
        label[base + idx] = idx;
        area[base + idx] = 0;
    }
}
extern "C" __global__ void regions_merge(const unsigned char* cls, int* label, const int S, const int top,
                                         const int left, const int bh, const int bw, const int first_burn,
                                         const int last_burn) {
    PICTURE_LOOP
        const unsigned char* c = cls + base;
        int* L = label + base;
        const int k = c[idx];
        if (!IS_BURN(k)) continue;
        if (x > 0 && c[idx - 1] == k) unite(L, idx, idx - 1);
        if (y > 0) {
            const int up = idx - S;
            if (x > 0 && c[up - 1] == k) unite(L, idx, up - 1);
            if (c[up] == k) unite(L, idx, up);
            if (x < bw - 1 && c[up + 1] == k) unite(L, idx, up + 1);
        }
    }
}
extern "C" __global__ void regions_area(const unsigned char* cls, int* label, int* area, const int S, const int top,
                                        const int left, const int bh, const int bw, const int first_burn,
                                        const int last_burn) {
    PICTURE_LOOP
        if (!IS_BURN(cls[base + idx])) continue;
        const int r = root_of(label + base, idx);
        label[base + idx] = r;
        atomicAdd(&area[base + r], 1);
    }
}
extern "C" __global__ void regions_mark(const unsigned char* cls, const unsigned char* unsure, const int* label,
                                        const int* area, unsigned char* shown, const int S, const int top,
                                        const int left, const int bh, const int bw, const int first_burn,
                                        const int last_burn, const int min_area) {
    PICTURE_LOOP
        const unsigned char k = cls[base + idx];
        // min_area <= 1: no region is that small, and label/area were not computed
        const bool doubt = IS_BURN(k) && (unsure[base + idx] || (min_area > 1 && area[base + label[base + idx]] < min_area));
        shown[base + idx] = doubt ? 255 : k;
    }
}
"""

# The picture checks' sums (clinical.assessability.PictureStats) on the device, from the uploaded
# frame: the thumbnail OpenCV's nearest-neighbour resize makes (source index floor(x * ifx),
# clipped), its luma as cv2.COLOR_RGB2GRAY computes it (fixed point, 14 bits), the Laplacian
# (ksize 1, reflect-101 border). Per frame (blockIdx.y): pixels, luma, bright pixels, |R-G|,
# |G-B|, Laplacian, Laplacian squared, added into sums[frame * 7 ...] (zeroed beforehand).
_PICTURE_SRC = r"""
__device__ int luma_at(const unsigned char* img, const int W, const int sy, const int sx) {
    const unsigned char* px = img + ((size_t)sy * W + sx) * 3;
    return (px[0] * 4899 + px[1] * 9617 + px[2] * 1868 + (1 << 13)) >> 14;
}
__device__ int source_index(const int t, const double inv, const int limit) {
    const int s = (int)floor(t * inv);
    return s < limit - 1 ? s : limit - 1;
}
extern "C" __global__ void picture_sums(const unsigned char* frames, const int H, const int W, const int th,
                                        const int tw, const double ify, const double ifx, double* sums) {
    __shared__ double acc[7][256];
    const unsigned char* img = frames + (size_t)blockIdx.y * H * W * 3;
    double v[7] = {0, 0, 0, 0, 0, 0, 0};
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < th * tw; p += gridDim.x * blockDim.x) {
        const int ty = p / tw, tx = p % tw;
        const int sy = source_index(ty, ify, H), sx = source_index(tx, ifx, W);
        const unsigned char* px = img + ((size_t)sy * W + sx) * 3;
        const int grey = luma_at(img, W, sy, sx);
        const int ym = ty > 0 ? ty - 1 : (th > 1 ? 1 : 0), yp = ty < th - 1 ? ty + 1 : (th > 1 ? th - 2 : 0);
        const int xm = tx > 0 ? tx - 1 : (tw > 1 ? 1 : 0), xp = tx < tw - 1 ? tx + 1 : (tw > 1 ? tw - 2 : 0);
        const int lap = luma_at(img, W, source_index(ym, ify, H), sx) + luma_at(img, W, source_index(yp, ify, H), sx)
                      + luma_at(img, W, sy, source_index(xm, ifx, W)) + luma_at(img, W, sy, source_index(xp, ifx, W))
                      - 4 * grey;
        v[0] += 1.0;
        v[1] += grey;
        v[2] += grey > 245 ? 1.0 : 0.0;
        v[3] += abs((int)px[0] - (int)px[1]);
        v[4] += abs((int)px[1] - (int)px[2]);
        v[5] += lap;
        v[6] += (double)lap * lap;
    }
    for (int k = 0; k < 7; ++k) acc[k][threadIdx.x] = v[k];
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) for (int k = 0; k < 7; ++k) acc[k][threadIdx.x] += acc[k][threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x < 7) atomicAdd(&sums[blockIdx.y * 7 + threadIdx.x], acc[threadIdx.x][0]);
}
"""

_RESTORE_SRC = r"""
// nearest-neighbour restore of the letterboxed square mask to frame size
const int fx = i % W;
int t = i / W;
const int fy = t % H;
const int b = t / H;
const unsigned char* sq = &square[0] + (size_t)b * S * S;
mask = sq[(size_t)(top + (&rowi[0])[fy]) * S + (left + (&coli[0])[fx])];
"""

_TINT_SRC = r"""
const int ch = i % 3;
const size_t px = i / 3;
const unsigned char m = (&mask[0])[px];
const float w = (&tinted[0])[m] ? alpha : 0.0f;
const float pix = (float)frames;
float v = __fadd_rn(__fmul_rn(pix, __fsub_rn(1.0f, w)), __fmul_rn((&colours[0])[m * 3 + ch], w));
v = __fadd_rn(v, 0.5f);
v = fminf(fmaxf(v, 0.0f), 255.0f);
out = (unsigned char)v;
"""

_HISTOGRAM_SRC = r"""
// counts (B, classes + 1): pixels of each class, and in the last column the uncertain ones (255)
extern "C" __global__ void class_histogram(const unsigned char* mask, const long long pixels,
                                           const int classes, int* counts) {
    extern __shared__ int local[];
    const int b = blockIdx.y;
    const int buckets = classes + 1;
    for (int k = threadIdx.x; k < buckets; k += blockDim.x) local[k] = 0;
    __syncthreads();
    const unsigned char* frame = mask + (size_t)b * pixels;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < pixels;
         p += (long long)gridDim.x * blockDim.x) {
        const int k = frame[p];
        if (k < classes) atomicAdd(&local[k], 1);
        else if (k == 255) atomicAdd(&local[classes], 1);
    }
    __syncthreads();
    for (int k = threadIdx.x; k < buckets; k += blockDim.x) {
        if (local[k]) atomicAdd(&counts[b * buckets + k], local[k]);
    }
}
"""

_CONFIDENCE_SRC = r"""
#include <cuda_fp16.h>
// Per frame of a batch: the sum of the top-class probability over skin pixels (class >= 1) inside
// the letterbox, and the number of those pixels (clinical.assessability.skin_confidence).
template <typename T>
__device__ void skin_confidence(const T* logits, const int C, const int S, const int top, const int left,
                                const int bh, const int bw, float* out) {
    __shared__ float sums[256];
    __shared__ float counts[256];
    const int b = blockIdx.y;
    const T* base = logits + (size_t)b * C * S * S;
    float sum = 0.0f, count = 0.0f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < bh * bw; p += gridDim.x * blockDim.x) {
        const int idx = (top + p / bw) * S + (left + p % bw);
        float best = (float)base[idx];
        int arg = 0;
        for (int k = 1; k < C; ++k) {
            const float v = (float)base[(size_t)k * S * S + idx];
            if (v > best) { best = v; arg = k; }
        }
        if (arg >= 1) {
            float z = 0.0f;
            for (int k = 0; k < C; ++k) z += __expf((float)base[(size_t)k * S * S + idx] - best);
            sum += 1.0f / z;
            count += 1.0f;
        }
    }
    sums[threadIdx.x] = sum;
    counts[threadIdx.x] = count;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) { sums[threadIdx.x] += sums[threadIdx.x + s]; counts[threadIdx.x] += counts[threadIdx.x + s]; }
        __syncthreads();
    }
    if (threadIdx.x == 0) { atomicAdd(&out[b * 2], sums[0]); atomicAdd(&out[b * 2 + 1], counts[0]); }
}
extern "C" __global__ void skin_confidence_f32(const float* l, const int C, const int S, const int top, const int left,
                                               const int bh, const int bw, float* out) {
    skin_confidence<float>(l, C, S, top, left, bh, bw, out);
}
extern "C" __global__ void skin_confidence_f16(const __half* l, const int C, const int S, const int top, const int left,
                                               const int bh, const int bw, float* out) {
    skin_confidence<__half>(l, C, S, top, left, bh, bw, out);
}
"""

_kernels_lock = threading.Lock()
_kernels: dict = {}


def fused_kernels() -> dict:
    """The lane kernels, compiled once per process."""
    with _kernels_lock:
        if not _kernels:
            import cupy as cp

            _kernels["preprocess"] = cp.ElementwiseKernel(
                "raw uint8 frames, raw int32 row0, raw int32 row1, raw float64 roww, raw int32 col0, "
                "raw int32 col1, raw float64 colw, raw float32 mean, raw float32 inv_std, int32 H, int32 W, "
                "int32 S, int32 top, int32 left, int32 bh, int32 bw",
                "float32 out", _PREPROCESS_SRC, "holoburn_letterbox_normalise")
            _kernels["argmax"] = cp.ElementwiseKernel(
                "raw T logits, int32 C, int32 SS, float32 min_conf, int32 first_burn, int32 last_burn",
                "uint8 mask, uint8 unsure", _ARGMAX_SRC, "holoburn_argmax")
            _kernels["restore"] = cp.ElementwiseKernel(
                "raw uint8 square, raw int32 rowi, raw int32 coli, int32 H, int32 W, int32 S, int32 top, int32 left",
                "uint8 mask", _RESTORE_SRC, "holoburn_restore_mask")
            _kernels["tint"] = cp.ElementwiseKernel(
                "uint8 frames, raw uint8 mask, raw bool tinted, raw float32 colours, float32 alpha",
                "uint8 out", _TINT_SRC, "holoburn_tint")
            _kernels["histogram"] = cp.RawKernel(_HISTOGRAM_SRC, "class_histogram")
            regions = cp.RawModule(code=_REGIONS_SRC)
            for name in ("init", "merge", "area", "mark"):
                _kernels[f"regions_{name}"] = regions.get_function(f"regions_{name}")
            _kernels["picture_sums"] = cp.RawKernel(_PICTURE_SRC, "picture_sums")
            confidence = cp.RawModule(code=_CONFIDENCE_SRC, options=("-std=c++14",))
            _kernels["confidence_float32"] = confidence.get_function("skin_confidence_f32")
            _kernels["confidence_float16"] = confidence.get_function("skin_confidence_f16")
    return _kernels


def bilinear_tables(in_len: int, out_len: int):
    """Source rows (or columns) and weights of a bilinear resize, computed with the very
    expressions of processing.preprocess._resize_device (CuPy): (i0 int32, i1 int32, w float64)."""
    import cupy as cp

    pos = (cp.arange(out_len, dtype=cp.float32) + 0.5) * (in_len / out_len) - 0.5
    pos = cp.clip(pos, 0, in_len - 1)
    i0 = cp.floor(pos).astype(cp.int32)
    i1 = cp.minimum(i0 + 1, in_len - 1)
    weight = pos - i0  # float32 - int32: float64, as in the reference
    return i0, i1, cp.ascontiguousarray(weight.astype(cp.float64))
