/* Fused LSTM cell math for pixelzoo.nn.scan's scan (CPU), built and loaded by pixelzoo.nn.native.
 *
 * One call runs one step of the scan over `rows` cell rows (one batch element at one position),
 * each holding `groups` independent LSTMs of `hidden` units, laid out as in the Python scan:
 *   pre, gates, dz: rows x groups x 4 x hidden, gates in the order o, f, i, g
 *   c, tc, h, dh:   rows x groups x hidden
 * Everything is contiguous and no two arrays overlap. The float32 versions compute exp with a
 * vectorisable polynomial (the classic Cephes expf, about 1 ulp) so that gcc -O3 turns the loops
 * into SIMD code; the float64 versions call libm's exp (the tests compare both with torch's ops).
 * NaN propagates (training's divergence check relies on it): no fast-math, and the clamps keep NaN.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline float exp_f32(float x) {
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365447504f ? -87.3365447504f : x;
    /* x = n ln2 + r, |r| <= ln2/2; n rounded to nearest by the 1.5 * 2^23 trick */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* 2^n, n in [-126, 127] after the clamps; a NaN x makes p NaN, and n is scrubbed so that the
     * conversion stays defined */
    uint32_t bits = (uint32_t)((int32_t)(n == n ? n : 0.0f) + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Forward of one step. The gate pre-activations of cell row r are z = pre[r] + Σ_tap y[r + tap
 * tap_rows][tap], y being the previous step's states times every tap's weights (rows + (taps-1)
 * tap_rows rows of taps x width4 values, one matrix product done by the caller). Then gates =
 * (σ(o), σ(f), σ(i), tanh(g)) of z; c = f c_prev + i g; tc = tanh(c); h = o tc, with
 * tanh(x) = 2 σ(2x) - 1 (one exp). restrict and simple loop shapes let gcc vectorise. */
#define FORWARD(T, SUFFIX, EXP)                                                                    \
    void lstm_forward_##SUFFIX(int64_t rows, int64_t groups, int64_t hidden, int64_t taps,         \
                               int64_t tap_rows, const T *restrict pre, const T *restrict y,       \
                               const T *restrict c_prev, T *restrict gates, T *restrict c,         \
                               T *restrict tc, T *restrict h) {                                    \
        const int64_t width4 = groups * 4 * hidden;                                                \
        for (int64_t r = 0; r < rows; ++r) {                                                       \
            T *restrict zr = gates + r * width4;                                                   \
            for (int64_t k = 0; k < width4; ++k) zr[k] = pre[r * width4 + k];                      \
            for (int64_t tap = 0; tap < taps; ++tap) {                                             \
                const T *restrict yr = y + ((r + tap * tap_rows) * taps + tap) * width4;           \
                for (int64_t k = 0; k < width4; ++k) zr[k] += yr[k];                               \
            }                                                                                      \
            for (int64_t grp = 0; grp < groups; ++grp) {                                           \
                T *restrict gc = zr + grp * 4 * hidden;                                            \
                for (int64_t k = 0; k < 3 * hidden; ++k) gc[k] = 1 / (1 + EXP(-gc[k]));            \
                for (int64_t k = 3 * hidden; k < 4 * hidden; ++k)                                  \
                    gc[k] = 2 / (1 + EXP(-2 * gc[k])) - 1;                                         \
                const T *o = gc, *f = gc + hidden, *in = gc + 2 * hidden, *g = gc + 3 * hidden;    \
                const int64_t off = (r * groups + grp) * hidden;                                   \
                for (int64_t k = 0; k < hidden; ++k) {                                             \
                    T cv = f[k] * c_prev[off + k] + in[k] * g[k];                                  \
                    T t = 2 / (1 + EXP(-2 * cv)) - 1;                                              \
                    c[off + k] = cv;                                                               \
                    tc[off + k] = t;                                                               \
                    h[off + k] = o[k] * t;                                                         \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

/* Backward of one step (dh = dout + dh_next, the gradient reaching h from the outputs and from
 * the next step): dz, and dc_prev = dc f where dc = dc_next + dh o (1 - tc²). */
#define BACKWARD(T, SUFFIX)                                                                        \
    void lstm_backward_##SUFFIX(int64_t rows, int64_t groups, int64_t hidden,                      \
                                const T *restrict gates, const T *restrict tc,                     \
                                const T *restrict c_prev, const T *restrict dout,                  \
                                const T *restrict dh_next, const T *restrict dc_next,              \
                                T *restrict dz, T *restrict dc_prev) {                             \
        for (int64_t cell = 0; cell < rows * groups; ++cell) {                                     \
            const T *gc = gates + cell * 4 * hidden;                                               \
            const T *o = gc, *f = gc + hidden, *in = gc + 2 * hidden, *g = gc + 3 * hidden;        \
            T *dzc = dz + cell * 4 * hidden;                                                       \
            const int64_t off = cell * hidden;                                                     \
            for (int64_t k = 0; k < hidden; ++k) {                                                 \
                T dh = dout[off + k] + dh_next[off + k];                                           \
                T t = tc[off + k];                                                                 \
                T dc = dc_next[off + k] + dh * o[k] * (1 - t * t);                                 \
                dzc[k] = dh * t * o[k] * (1 - o[k]);                                               \
                dzc[hidden + k] = dc * c_prev[off + k] * f[k] * (1 - f[k]);                        \
                dzc[2 * hidden + k] = dc * g[k] * in[k] * (1 - in[k]);                             \
                dzc[3 * hidden + k] = dc * in[k] * (1 - g[k] * g[k]);                              \
                dc_prev[off + k] = dc * f[k];                                                      \
            }                                                                                      \
        }                                                                                          \
    }

/* The backward of the taps: dst[r + tap tap_rows, :] += src[r, tap, :] for r < rows, every tap
 * (src: rows x taps x width, the step's dz times every tap's weights). */
#define ADD_TAPS(T, SUFFIX)                                                                        \
    void add_taps_##SUFFIX(int64_t rows, int64_t width, int64_t taps, int64_t tap_rows,            \
                           const T *restrict src, T *restrict dst) {                               \
        for (int64_t tap = 0; tap < taps; ++tap)                                                   \
            for (int64_t r = 0; r < rows; ++r)                                                     \
                for (int64_t k = 0; k < width; ++k)                                                \
                    dst[(r + tap * tap_rows) * width + k] += src[(r * taps + tap) * width + k];    \
    }

FORWARD(float, f32, exp_f32)
FORWARD(double, f64, exp)
BACKWARD(float, f32)
BACKWARD(double, f64)
ADD_TAPS(float, f32)
ADD_TAPS(double, f64)
