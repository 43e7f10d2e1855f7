"""Step schedules fitted offline (see docs/sampling.md, "Optimised step schedules").

``OPTIMISED_SCHEDULES[N]`` is a warp ``v_0 = 0 < ... < v_N = 1`` of log σ:
``log σ_i = log σ_max + v_i (log σ_min - log σ_max)``. Regenerate with
``python benchmarks/samplers.py --fit``.
"""

OPTIMISED_SCHEDULES: dict[int, list[float]] = {
    10: [0.0, 0.0575, 0.1623, 0.2469, 0.3015, 0.3407, 0.4365, 0.5102, 0.5623, 0.6467, 1.0],
}
