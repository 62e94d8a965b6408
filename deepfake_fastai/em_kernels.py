"""Compiled (numba) kernels for the EM traces: the per-pixel passes of one EM iteration, fused, in cache.

Each EM iteration needs, per plane, the weight of every pixel (a function of its residual) and the weighted
moments sum_p w_p z_i z_j of the window values z (the k*k-1 neighbours, then the pixel itself). numpy does
these as separate passes over a (k*k x pixels) design matrix, which is memory-bound; these kernels read the
padded plane in place:
  exponents:        t = scale * r^2 + shift, clipped to +-MAX_EXPONENT; r = sum_i coef_i z_i (the residual)
  moments:          sum_p w_p z_i z_j and sum_p w_p, with w = e (the caller's exp(t))
  moments_logistic: the same with w = 1 / (1 + e) (the mixture's posterior)
numpy does exp(t) in between (its exp is vectorised, numba's is not).

Why generated source: LLVM keeps the 45 running sums of a 3x3 window in registers and vectorises over pixels
only when they are named scalars; the same loop over an accumulator array measured 8-12x slower. ``source(k)``
returns the text that is compiled, for reading. Windows larger than ``MAX_KERNEL`` would compile for tens of
seconds (k = 5: 325 sums, 23 s) and spill registers anyway: ``traces`` uses its numpy path for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache

MAX_KERNEL = 3  # largest window side compiled here (45 sums; ~1 s per kernel to compile, once per process)
# |t| is capped here: exp(+-600) and the products of a weight with pixel values (>= 1/255) stay normal floats
# (subnormals make the moments 4x slower), and a weight of e^-600 or 1 / (1 + e^600) adds nothing to a sum
MAX_EXPONENT = 600.0
# C-contiguous float64 arrays, in argument order
SIGNATURES = {
    "exponents": "void(f8[:, :, ::1], f8[:, ::1], f8[::1], f8[::1], f8[:, ::1])",  # padded, coef, scale, shift, t
    "moments": "void(f8[:, :, ::1], f8[:, ::1], f8[:, :, ::1], f8[::1])",  # padded, e, moments, weight sums
    "moments_logistic": "void(f8[:, :, ::1], f8[:, ::1], f8[:, :, ::1], f8[::1])",
}
_compile_lock = threading.Lock()  # the first thread tasks of a run would otherwise all compile the same kernels


def offsets(kernel: int) -> list[tuple[int, int]]:
    """(row, column) of each window value inside the padded plane, neighbours in raster order, the pixel last."""
    centre = kernel * kernel // 2
    order = [i for i in range(kernel * kernel) if i != centre] + [centre]
    return [(i // kernel, i % kernel) for i in order]


def source(kernel: int) -> str:
    """Python source of the three per-pixel kernels for one window side (padded: (N, H + k - 1, W + k - 1))."""
    offs = offsets(kernel)
    head = ["    n, hp, wp = padded.shape", f"    hgt, wid = hp - {kernel - 1}, wp - {kernel - 1}",
            "    for p in range(n):"]
    pixels = ["        for y in range(hgt):", "            for x in range(wid):",
              *(f"                z{i} = padded[p, y + {dy}, x + {dx}]" for i, (dy, dx) in enumerate(offs))]
    exponents = ["def exponents(padded, coef, scale, shift, t):", *head,
                 *(f"        c{i} = coef[p, {i}]" for i in range(len(offs))), *pixels,
                 "                r = " + " + ".join(f"c{i} * z{i}" for i in range(len(offs))),
                 f"                t[p, y * wid + x] = min(max(scale[p] * r * r + shift[p], {-MAX_EXPONENT}), "
                 f"{MAX_EXPONENT})"]
    plain = _moments_source("moments", "e[p, y * wid + x]", head, pixels, len(offs))
    logistic = _moments_source("moments_logistic", "1.0 / (1.0 + e[p, y * wid + x])", head, pixels, len(offs))
    return "\n\n\n".join("\n".join(f) for f in (exponents, plain, logistic)) + "\n"


def _moments_source(name: str, weight: str, head: list[str], pixels: list[str], n_values: int) -> list[str]:
    pairs = [(i, j) for i in range(n_values) for j in range(i, n_values)]
    return [f"def {name}(padded, e, out, wsum):", *head, "        ws = 0.0",
            *(f"        s{a} = 0.0" for a in range(len(pairs))), *pixels,
            f"                wx = {weight}", "                ws += wx",
            *(f"                v{i} = wx * z{i}" for i in range(n_values)),
            *(f"                s{a} += v{i} * z{j}" for a, (i, j) in enumerate(pairs)),
            "        wsum[p] = ws",
            *(f"        out[p, {i}, {j}] = out[p, {j}, {i}] = s{a}" for a, (i, j) in enumerate(pairs))]


def compiled(name: str, kernel: int) -> Callable:
    """One kernel (a name in ``SIGNATURES``) for one window side, compiled on first use in a process (~1 s)."""
    if kernel > MAX_KERNEL:
        raise ValueError(f"compiled kernels go up to {MAX_KERNEL}x{MAX_KERNEL} windows; got {kernel}")
    with _compile_lock:
        return _compile(name, kernel)


@lru_cache
def _compile(name: str, kernel: int) -> Callable:
    import numba

    namespace: dict = {"min": min, "max": max}
    exec(compile(source(kernel), f"<em_kernels k={kernel}>", "exec"), namespace)  # our own text, no input
    # reassoc lets LLVM split each sum across vector lanes (no fast-math assumptions about NaN or inf);
    # error_model numpy: no ZeroDivisionError check, whose branch would stop the division from vectorising
    jit = numba.njit(SIGNATURES[name], nogil=True, fastmath={"reassoc", "contract"}, error_model="numpy")
    return jit(namespace[name])
