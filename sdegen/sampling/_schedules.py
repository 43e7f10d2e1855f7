"""Step schedules fitted offline (see docs/sampling.md, "Optimised step schedules").

``OPTIMISED_SCHEDULES[method][N]`` is a warp ``v_0 = 0 < ... < v_N = 1`` of log σ:
``log σ_i = log σ_max + v_i (log σ_min - log σ_max)``; other step counts interpolate the fitted
schedule with the nearest N (in log N), read as a quantile function of ``i / N``. Methods
without schedules of their own use ``DEFAULT_SCHEDULE``'s.

How they were fitted (``python benchmarks/samplers.py --fit``): for each method (``ipndm``
order 4 with exact variable-step weights, ``unipc`` order 3, bh2, lower order in the last steps
below 15 steps) and N, the N - 1 interior locations (softmax-parametrised increments of v, so
always increasing) minimise the mean squared path error, over all training samples, against
converged solves (UniPC, 400 log-SNR steps), by L-BFGS (strong Wolfe, 20 iterations) through the
library's own plans and loops with the exact denoiser of the benchmark mixture (8 components,
d = 64, means N(0, I), variances U[0.1, 1]; VE, σ ∈ [0.002, 80]). Training noise: seeds
1000-1003 (N = 10, 20) or 1000-1001 (N = 50), 1000 samples each; starts ρ = 7 (and log-SNR for
N = 10, keeping the lower training loss). Held-out noise (seeds 2000-2002), path error RMS:

- ``unipc``: N = 10 0.334 (ρ = 7) -> 0.0426.
- ``unipc``, N = 20, then refitted flip-aware as N = 50 below (``--fit-screen 500
  --fit-methods unipc --fit-nfe 20 --fit-iters 10 --fit-rounds 8``, about 12 minutes) from the
  schedule above: held-out typical RMS 1.6e-3 -> 1.2e-3 (VE and VP), flips among the flagged
  samples 140 / 122 -> 63 / 59 (VE / VP).
- ``unipc``, N = 50, flip-aware (``--fit-screen 500 --fit-methods unipc --fit-nfe 50
  --fit-iters 10 --fit-rounds 4``, about 9 minutes): 500 batches of noise per SDE (seeds
  5000-5499, VE and VP) screened for the samples near a basin boundary (unipc at 20 and 100 NFE
  differ by more than 1e-4, 0.9% of them), and the stratified mean loss over all samples
  minimised from the 20-step schedule resampled; flips saturate at 0.014. Held-out half (about
  500 000 samples' worth): typical RMS 2.4e-4 / 2.2e-4 (VE / VP) -> 4.8e-5 / 4.6e-5, flips 6 ->
  2. Before this, L-BFGS stopped in its first line search at 50 steps: the loss (about 3e-6)
  gave gradients under its tolerance (1e-7); the fits now divide the loss by its start value.
- ``unipc``, N = 20, fitted for the order-4 predictor that ``order="auto"`` takes from 20 steps
  (``--fit-nfe 20 --fit-iters 10 --fit-rounds 5``): from log-SNR, 5 rounds of 10 L-BFGS
  iterations; the round kept is the one with the lowest path error on validation noise (seeds
  3000-3009, VE and VP), since the training error kept falling while held-out errors went up
  and down with the rare samples that end in another component. Validation RMS 0.0074 (VE and
  VP together) against 0.0149 for the order-3 schedule fitted before.
- ``ipndm``: N = 10 0.140 -> 0.0874; N = 20 0.0414 -> 0.0313. At N = 50 the fit overfitted its
  two training batches (train 9.0e-4, held-out 1.25e-2 vs ρ = 7's 3.1e-3), so the ρ = 7 grid
  is stored.
"""

DEFAULT_SCHEDULE = "unipc"
# The σ range the schedules were fitted on (VE, EDM's range); see grids.optimised_sigmas.
FIT_SIGMA_RANGE = (0.002, 80.0)

OPTIMISED_SCHEDULES: dict[str, dict[int, list[float]]] = {
    "unipc": {
        10: [
            0.0,
            0.07732,
            0.16455,
            0.26012,
            0.31747,
            0.3989,
            0.52565,
            0.56767,
            0.64253,
            0.76529,
            1.0,
        ],
        20: [
            0.0,
            0.09641,
            0.17901,
            0.22248,
            0.2673,
            0.29268,
            0.31887,
            0.34071,
            0.36813,
            0.39965,
            0.42706,
            0.4706,
            0.517,
            0.56239,
            0.62557,
            0.68343,
            0.74282,
            0.82012,
            0.89097,
            0.94826,
            1.0,
        ],
        50: [
            0.0,
            0.02452,
            0.0709,
            0.11439,
            0.15668,
            0.19383,
            0.21261,
            0.22983,
            0.25219,
            0.26376,
            0.28532,
            0.29152,
            0.3042,
            0.31403,
            0.32329,
            0.33159,
            0.33985,
            0.34721,
            0.35558,
            0.36475,
            0.37336,
            0.38206,
            0.38978,
            0.3958,
            0.40485,
            0.41724,
            0.43066,
            0.45139,
            0.47022,
            0.49494,
            0.51485,
            0.53299,
            0.55585,
            0.57971,
            0.60147,
            0.62499,
            0.65132,
            0.67718,
            0.70363,
            0.73177,
            0.75984,
            0.78591,
            0.81177,
            0.83654,
            0.86006,
            0.88351,
            0.90572,
            0.92795,
            0.95124,
            0.9756,
            1.0,
        ],
    },
    "ipndm": {
        10: [
            0.0,
            0.09598,
            0.18083,
            0.24099,
            0.28583,
            0.32921,
            0.39172,
            0.45,
            0.49734,
            0.69141,
            1.0,
        ],
        20: [
            0.0,
            0.04594,
            0.09192,
            0.1336,
            0.16782,
            0.19341,
            0.21562,
            0.23826,
            0.25789,
            0.27382,
            0.29574,
            0.32499,
            0.3497,
            0.38308,
            0.41863,
            0.44846,
            0.48725,
            0.57479,
            0.68868,
            0.82555,
            1.0,
        ],
        50: [
            0.0,
            0.01039,
            0.02094,
            0.03166,
            0.04256,
            0.05364,
            0.06491,
            0.07638,
            0.08805,
            0.09993,
            0.11203,
            0.12435,
            0.13691,
            0.14971,
            0.16276,
            0.17608,
            0.18967,
            0.20354,
            0.21772,
            0.2322,
            0.24701,
            0.26216,
            0.27766,
            0.29354,
            0.30981,
            0.32649,
            0.3436,
            0.36116,
            0.37921,
            0.39776,
            0.41685,
            0.43651,
            0.45677,
            0.47767,
            0.49925,
            0.52157,
            0.54466,
            0.56859,
            0.59342,
            0.61922,
            0.64606,
            0.67405,
            0.70327,
            0.73385,
            0.76591,
            0.79961,
            0.83511,
            0.87264,
            0.91243,
            0.95476,
            1.0,
        ],
    },
}
