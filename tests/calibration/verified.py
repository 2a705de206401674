"""Training numbers behind every calibration label (GENERATED: do not edit).

Regenerate with ``.venv/bin/python -m tests.calibration.verify`` (see that module
for the method). Per case: the constant predictor's loss (``baseline``), the
largest per-feature condition number (``kappa``) and std ratio of the inputs, and
per arm the best final loss after training (``best``), its learning rate and the
final loss at every learning rate; ``label`` is what the numbers justify."""

from typing import Any

BUDGET: dict[str, Any] = {
    "optimizer": "Adam",
    "steps": 3000,
    "lrs": [0.0001, 0.001, 0.01, 0.1],
    "torch": "2.13.0",
}

VERIFIED: dict[str, dict[str, Any]] = {
    "reference_tanh": {
        "baseline": 0.05449,
        "kappa": 54620000000.0,
        "std_ratio": 1.0,
        "raw": {
            "best": 0.0546,
            "lr": 0.001,
            "finals": {"1e-04": 0.05466, "1e-03": 0.0546, "1e-02": 0.05973, "1e-01": 0.07776},
        },
        "standardized": {
            "best": 0.0001555,
            "lr": 0.01,
            "finals": {"1e-04": 0.01064, "1e-03": 0.003167, "1e-02": 0.0001555, "1e-01": 0.001069},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 0.00285x",
    },
    "reference_sigmoid": {
        "baseline": 0.05449,
        "kappa": 54620000000.0,
        "std_ratio": 1.0,
        "raw": {
            "best": 0.05457,
            "lr": 0.001,
            "finals": {"1e-04": 0.05482, "1e-03": 0.05457, "1e-02": 0.05486, "1e-01": 0.0904},
        },
        "standardized": {
            "best": 0.0001852,
            "lr": 0.1,
            "finals": {"1e-04": 0.03734, "1e-03": 0.005976, "1e-02": 0.001342, "1e-01": 0.0001852},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 0.0034x",
    },
    "reference_relu": {
        "baseline": 0.05449,
        "kappa": 54620000000.0,
        "std_ratio": 1.0,
        "raw": {
            "best": 0.3523,
            "lr": 0.0001,
            "finals": {"1e-04": 0.3523, "1e-03": 0.3523, "1e-02": 0.3523, "1e-01": 0.3523},
        },
        "standardized": {
            "best": 0.0001153,
            "lr": 0.01,
            "finals": {"1e-04": 0.01849, "1e-03": 0.0006395, "1e-02": 0.0001153, "1e-01": 0.000612},
        },
        "label": "stalling",
        "reason": "raw stays at 6.47x the constant predictor's loss, rescaled reaches 0.00212x",
    },
    "reference_standardized": {
        "baseline": 0.05449,
        "kappa": 1.05,
        "std_ratio": 1.0,
        "raw": {
            "best": 0.0001531,
            "lr": 0.01,
            "finals": {"1e-04": 0.01056, "1e-03": 0.003112, "1e-02": 0.0001531, "1e-01": 0.001123},
        },
        "standardized": {
            "best": 0.0001555,
            "lr": 0.01,
            "finals": {"1e-04": 0.01064, "1e-03": 0.003167, "1e-02": 0.0001555, "1e-01": 0.001555},
        },
        "label": "ok",
        "reason": "well scaled and raw training reaches 0.00281x the baseline",
    },
    "heterogeneous_scales_tanh": {
        "baseline": 1.0,
        "kappa": 102600000.0,
        "std_ratio": 991500.0,
        "raw": {
            "best": 0.9725,
            "lr": 0.001,
            "finals": {"1e-04": 0.984, "1e-03": 0.9725, "1e-02": 0.9766, "1e-01": 1.003},
        },
        "standardized": {
            "best": 0.001472,
            "lr": 0.01,
            "finals": {"1e-04": 0.3601, "1e-03": 0.008237, "1e-02": 0.001472, "1e-01": 0.01202},
        },
        "label": "stalling",
        "reason": "raw stays at 0.973x the constant predictor's loss, rescaled reaches 0.00147x",
    },
    "large_offsets_tanh": {
        "baseline": 1.0,
        "kappa": 14290000000000.0,
        "std_ratio": 11.54,
        "raw": {
            "best": 1.0,
            "lr": 0.0001,
            "finals": {"1e-04": 1.0, "1e-03": 1.0, "1e-02": 1.004, "1e-01": 1.034},
        },
        "standardized": {
            "best": 0.0001025,
            "lr": 0.01,
            "finals": {"1e-04": 0.1546, "1e-03": 0.004346, "1e-02": 0.0001025, "1e-01": 0.001291},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 0.000102x",
    },
    "large_offset_relu": {
        "baseline": 1.0,
        "kappa": 6887000000000.0,
        "std_ratio": 1.0,
        "raw": {
            "best": 1.0,
            "lr": 0.0001,
            "finals": {"1e-04": 1.0, "1e-03": 1.013, "1e-02": 149.3, "1e-01": 1.0},
        },
        "standardized": {
            "best": 9.572e-07,
            "lr": 0.01,
            "finals": {
                "1e-04": 0.01145,
                "1e-03": 9.091e-05,
                "1e-02": 9.572e-07,
                "1e-01": 0.0001376,
            },
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 9.57e-07x",
    },
    "large_offset_relu_fewer_dead": {
        "baseline": 1.0,
        "kappa": 6887000000000.0,
        "std_ratio": 1.0,
        "raw": {
            "best": 1.0,
            "lr": 0.0001,
            "finals": {"1e-04": 1.0, "1e-03": 1.005, "1e-02": 4.776, "1e-01": 1.0},
        },
        "standardized": {
            "best": 2.565e-05,
            "lr": 0.01,
            "finals": {"1e-04": 0.02077, "1e-03": 6.232e-05, "1e-02": 2.565e-05, "1e-01": 0.001705},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 2.57e-05x",
    },
    "pixels_0_255_sigmoid": {
        "baseline": 1.382,
        "kappa": 204200.0,
        "std_ratio": 2.651,
        "raw": {
            "best": 5.571e-05,
            "lr": 0.1,
            "finals": {"1e-04": 0.0955, "1e-03": 0.003106, "1e-02": 0.000137, "1e-01": 5.571e-05},
        },
        "standardized": {
            "best": 1.172e-06,
            "lr": 0.1,
            "finals": {
                "1e-04": 0.03989,
                "1e-03": 0.0008205,
                "1e-02": 2.604e-05,
                "1e-01": 1.172e-06,
            },
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 4.03e-05x the baseline",
    },
    "unix_timestamps_tanh": {
        "baseline": 1.0,
        "kappa": 1.008e23,
        "std_ratio": 1120000.0,
        "raw": {
            "best": 1.0,
            "lr": 0.0001,
            "finals": {"1e-04": 1.0, "1e-03": 1.0, "1e-02": 1.0, "1e-01": 1.063},
        },
        "standardized": {
            "best": 4.496e-05,
            "lr": 0.01,
            "finals": {"1e-04": 0.1963, "1e-03": 0.006064, "1e-02": 4.496e-05, "1e-01": 0.0008224},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 4.5e-05x",
    },
    "constant_timestamp_tanh": {
        "baseline": 1.0,
        "kappa": 2.89e18,
        "std_ratio": 1.035,
        "raw": {
            "best": 1.0,
            "lr": 0.0001,
            "finals": {"1e-04": 1.0, "1e-03": 1.0, "1e-02": 1.002, "1e-01": 1.002},
        },
        "standardized": {
            "best": 0.0002099,
            "lr": 0.01,
            "finals": {"1e-04": 0.1574, "1e-03": 0.003859, "1e-02": 0.0002099, "1e-01": 0.001476},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 0.00021x",
    },
    "prices_in_thousands_tanh": {
        "baseline": 1.0,
        "kappa": 198400000.0,
        "std_ratio": 1921.0,
        "raw": {
            "best": 1.0,
            "lr": 0.0001,
            "finals": {"1e-04": 1.0, "1e-03": 1.0, "1e-02": 1.0, "1e-01": 1.001},
        },
        "standardized": {
            "best": 4.996e-05,
            "lr": 0.01,
            "finals": {"1e-04": 0.1138, "1e-03": 0.002074, "1e-02": 4.996e-05, "1e-01": 0.0006293},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 5e-05x",
    },
    "prices_in_thousands_relu": {
        "baseline": 1.0,
        "kappa": 198400000.0,
        "std_ratio": 1921.0,
        "raw": {
            "best": 0.4459,
            "lr": 0.1,
            "finals": {"1e-04": 0.7472, "1e-03": 4.293, "1e-02": 21.31, "1e-01": 0.4459},
        },
        "standardized": {
            "best": 9.078e-05,
            "lr": 0.01,
            "finals": {
                "1e-04": 0.03678,
                "1e-03": 0.0005428,
                "1e-02": 9.078e-05,
                "1e-01": 0.0006223,
            },
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 0.446x the baseline",
    },
    "mixed_binary_and_huge_tanh": {
        "baseline": 0.6884,
        "kappa": 37880000000.0,
        "std_ratio": 63700.0,
        "raw": {
            "best": 0.6884,
            "lr": 0.0001,
            "finals": {"1e-04": 0.6884, "1e-03": 0.6884, "1e-02": 0.6884, "1e-01": 0.6896},
        },
        "standardized": {
            "best": 0.1208,
            "lr": 0.1,
            "finals": {"1e-04": 0.1905, "1e-03": 0.1518, "1e-02": 0.1419, "1e-01": 0.1208},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 0.175x",
    },
    "heavy_tailed_counts_tanh": {
        "baseline": 1.0,
        "kappa": 58670.0,
        "std_ratio": 1.618,
        "raw": {
            "best": 0.003001,
            "lr": 0.001,
            "finals": {"1e-04": 0.2373, "1e-03": 0.003001, "1e-02": 0.04507, "1e-01": 0.2768},
        },
        "standardized": {
            "best": 0.04409,
            "lr": 0.1,
            "finals": {"1e-04": 0.5759, "1e-03": 0.1001, "1e-02": 0.05489, "1e-01": 0.04409},
        },
        "log-standardized": {
            "best": 0.0001006,
            "lr": 0.01,
            "finals": {"1e-04": 0.1799, "1e-03": 0.004935, "1e-02": 0.0001006, "1e-01": 0.0004752},
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 0.003x the baseline",
    },
    "irrelevant_id_column_tanh": {
        "baseline": 1.0,
        "kappa": 1427000000000.0,
        "std_ratio": 292000.0,
        "raw": {
            "best": 0.9999,
            "lr": 0.0001,
            "finals": {"1e-04": 0.9999, "1e-03": 1.0, "1e-02": 1.001, "1e-01": 1.0},
        },
        "standardized": {
            "best": 0.0009249,
            "lr": 0.01,
            "finals": {"1e-04": 0.3502, "1e-03": 0.007959, "1e-02": 0.0009249, "1e-01": 0.0197},
        },
        "log-standardized": {
            "best": 0.0009836,
            "lr": 0.01,
            "finals": {"1e-04": 0.346, "1e-03": 0.00811, "1e-02": 0.0009836, "1e-01": 0.004907},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 0.000925x",
    },
    "tiny_scale_tanh": {
        "baseline": 1.0,
        "kappa": 107900000.0,
        "std_ratio": 1.026,
        "raw": {
            "best": 0.2263,
            "lr": 0.1,
            "finals": {"1e-04": 0.9999, "1e-03": 0.9977, "1e-02": 0.2668, "1e-01": 0.2263},
        },
        "standardized": {
            "best": 0.0002527,
            "lr": 0.01,
            "finals": {"1e-04": 0.1525, "1e-03": 0.00208, "1e-02": 0.0002527, "1e-01": 0.0004469},
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 0.226x the baseline",
    },
    "std_100_relu": {
        "baseline": 1.0,
        "kappa": 10970.0,
        "std_ratio": 1.043,
        "raw": {
            "best": 0.03091,
            "lr": 0.01,
            "finals": {"1e-04": 1.312, "1e-03": 0.169, "1e-02": 0.03091, "1e-01": 0.2141},
        },
        "standardized": {
            "best": 0.001041,
            "lr": 0.01,
            "finals": {"1e-04": 0.1831, "1e-03": 0.004678, "1e-02": 0.001041, "1e-01": 0.01352},
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 0.0309x the baseline",
    },
    "pixels_0_255_relu_cnn": {
        "baseline": 1.382,
        "kappa": 38430.0,
        "std_ratio": 1.0,
        "raw": {
            "best": 3.865e-08,
            "lr": 0.01,
            "finals": {"1e-04": 8.039e-05, "1e-03": 7.108e-07, "1e-02": 3.865e-08, "1e-01": 1.382},
        },
        "standardized": {
            "best": 1.164e-09,
            "lr": 0.1,
            "finals": {
                "1e-04": 0.003294,
                "1e-03": 4.498e-05,
                "1e-02": 1.316e-06,
                "1e-01": 1.164e-09,
            },
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 2.8e-08x the baseline",
    },
    "batchnorm_after_input": {
        "baseline": 1.0,
        "kappa": 102600000.0,
        "std_ratio": 991500.0,
        "raw": {
            "best": 0.03662,
            "lr": 0.01,
            "finals": {"1e-04": 0.3703, "1e-03": 0.06042, "1e-02": 0.03662, "1e-01": 0.07236},
        },
        "standardized": {
            "best": 0.03702,
            "lr": 0.01,
            "finals": {"1e-04": 0.3674, "1e-03": 0.0609, "1e-02": 0.03702, "1e-01": 0.1156},
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 0.0366x the baseline",
    },
    "layernorm_after_pixels": {
        "baseline": 1.382,
        "kappa": 204200.0,
        "std_ratio": 2.651,
        "raw": {
            "best": 1.417e-06,
            "lr": 0.1,
            "finals": {
                "1e-04": 0.03684,
                "1e-03": 0.0007966,
                "1e-02": 2.655e-05,
                "1e-01": 1.417e-06,
            },
        },
        "standardized": {
            "best": 1.181e-06,
            "lr": 0.1,
            "finals": {
                "1e-04": 0.03725,
                "1e-03": 0.0007841,
                "1e-02": 2.506e-05,
                "1e-01": 1.181e-06,
            },
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 1.03e-06x the baseline",
    },
    "penguins_raw_tanh": {
        "baseline": 1.05,
        "kappa": 522000000.0,
        "std_ratio": 406.1,
        "raw": {
            "best": 1.05,
            "lr": 0.01,
            "finals": {"1e-04": 1.05, "1e-03": 1.05, "1e-02": 1.05, "1e-01": 1.054},
        },
        "standardized": {
            "best": 1.683e-05,
            "lr": 0.1,
            "finals": {"1e-04": 0.2173, "1e-03": 0.01179, "1e-02": 0.001259, "1e-01": 1.683e-05},
        },
        "label": "stalling",
        "reason": "raw stays at 1x the constant predictor's loss, rescaled reaches 1.6e-05x",
    },
    "penguins_raw_relu": {
        "baseline": 1.05,
        "kappa": 522000000.0,
        "std_ratio": 406.1,
        "raw": {
            "best": 0.16,
            "lr": 0.01,
            "finals": {"1e-04": 2.064, "1e-03": 0.2913, "1e-02": 0.16, "1e-01": 1.05},
        },
        "standardized": {
            "best": 4.06e-05,
            "lr": 0.1,
            "finals": {"1e-04": 0.1873, "1e-03": 0.008845, "1e-02": 0.0002238, "1e-01": 4.06e-05},
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 0.152x the baseline",
    },
    "penguins_standardized": {
        "baseline": 1.05,
        "kappa": 1.0,
        "std_ratio": 1.0,
        "raw": {
            "best": 1.683e-05,
            "lr": 0.1,
            "finals": {"1e-04": 0.2173, "1e-03": 0.01179, "1e-02": 0.001259, "1e-01": 1.683e-05},
        },
        "standardized": {
            "best": 1.683e-05,
            "lr": 0.1,
            "finals": {"1e-04": 0.2173, "1e-03": 0.01179, "1e-02": 0.001259, "1e-01": 1.683e-05},
        },
        "label": "ok",
        "reason": "well scaled and raw training reaches 1.6e-05x the baseline",
    },
    "norris_ozone_tanh": {
        "baseline": 1.0,
        "kappa": 731400.0,
        "std_ratio": 1.0,
        "raw": {
            "best": 0.003101,
            "lr": 0.001,
            "finals": {"1e-04": 0.1416, "1e-03": 0.003101, "1e-02": 0.5114, "1e-01": 0.7026},
        },
        "standardized": {
            "best": 7.712e-06,
            "lr": 0.01,
            "finals": {
                "1e-04": 0.01252,
                "1e-03": 6.558e-05,
                "1e-02": 7.712e-06,
                "1e-01": 0.0004466,
            },
        },
        "log-standardized": {
            "best": 2.436e-05,
            "lr": 0.1,
            "finals": {"1e-04": 0.264, "1e-03": 0.002791, "1e-02": 4.749e-05, "1e-01": 2.436e-05},
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 0.0031x the baseline",
    },
    "iris_cm_tanh": {
        "baseline": 1.099,
        "kappa": 1882.0,
        "std_ratio": 4.069,
        "raw": {
            "best": 0.04032,
            "lr": 0.1,
            "finals": {"1e-04": 0.4165, "1e-03": 0.0546, "1e-02": 0.04039, "1e-01": 0.04032},
        },
        "standardized": {
            "best": 5.739e-05,
            "lr": 0.1,
            "finals": {"1e-04": 0.3366, "1e-03": 0.04677, "1e-02": 0.01705, "1e-01": 5.739e-05},
        },
        "label": "at_risk",
        "reason": "badly scaled, yet raw training reaches 0.0367x the baseline",
    },
    "standardized_tanh": {
        "baseline": 1.0,
        "kappa": 1.163,
        "std_ratio": 1.078,
        "raw": {
            "best": 0.0008904,
            "lr": 0.01,
            "finals": {"1e-04": 0.2661, "1e-03": 0.008211, "1e-02": 0.0008904, "1e-01": 0.003878},
        },
        "standardized": {
            "best": 0.0008137,
            "lr": 0.01,
            "finals": {"1e-04": 0.2668, "1e-03": 0.008161, "1e-02": 0.0008137, "1e-01": 0.03008},
        },
        "label": "ok",
        "reason": "well scaled and raw training reaches 0.00089x the baseline",
    },
    "batchnorm_on_standardized": {
        "baseline": 1.0,
        "kappa": 1.256,
        "std_ratio": 1.05,
        "raw": {
            "best": 0.02865,
            "lr": 0.01,
            "finals": {"1e-04": 0.2691, "1e-03": 0.04077, "1e-02": 0.02865, "1e-01": 0.0626},
        },
        "standardized": {
            "best": 0.02865,
            "lr": 0.01,
            "finals": {"1e-04": 0.2691, "1e-03": 0.04077, "1e-02": 0.02865, "1e-01": 0.05123},
        },
        "label": "ok",
        "reason": "well scaled and raw training reaches 0.0286x the baseline",
    },
    "mild_scales_tanh": {
        "baseline": 1.0,
        "kappa": 148.1,
        "std_ratio": 1.016,
        "raw": {
            "best": 0.001556,
            "lr": 0.01,
            "finals": {"1e-04": 0.1846, "1e-03": 0.01715, "1e-02": 0.001556, "1e-01": 0.02044},
        },
        "standardized": {
            "best": 0.0004003,
            "lr": 0.01,
            "finals": {"1e-04": 0.1761, "1e-03": 0.004938, "1e-02": 0.0004003, "1e-01": 0.0004075},
        },
        "log-standardized": {
            "best": 0.0006137,
            "lr": 0.01,
            "finals": {"1e-04": 0.2435, "1e-03": 0.007112, "1e-02": 0.0006137, "1e-01": 0.003229},
        },
        "label": "ok",
        "reason": "well scaled and raw training reaches 0.00156x the baseline",
    },
    "sparse_binary_features": {
        "baseline": 0.6912,
        "kappa": 19.47,
        "std_ratio": 1.973,
        "raw": {
            "best": 0.07081,
            "lr": 0.01,
            "finals": {"1e-04": 0.1669, "1e-03": 0.08869, "1e-02": 0.07081, "1e-01": 0.07149},
        },
        "standardized": {
            "best": 0.07085,
            "lr": 0.01,
            "finals": {"1e-04": 0.1333, "1e-03": 0.07622, "1e-02": 0.07085, "1e-01": 0.07744},
        },
        "label": "ok",
        "reason": "well scaled and raw training reaches 0.102x the baseline",
    },
    "embedding_ids_and_features": {
        "baseline": 1.0,
        "kappa": 1.2,
        "std_ratio": 1.04,
        "raw": {
            "best": 0.001821,
            "lr": 0.01,
            "finals": {"1e-04": 0.3092, "1e-03": 0.002489, "1e-02": 0.001821, "1e-01": 0.04602},
        },
        "standardized": {
            "best": 0.00246,
            "lr": 0.001,
            "finals": {"1e-04": 0.3089, "1e-03": 0.00246, "1e-02": 0.002649, "1e-01": 0.05718},
        },
        "label": "ok",
        "reason": "well scaled and raw training reaches 0.00182x the baseline",
    },
    "standardizer_prepended": {
        "baseline": 1.0,
        "kappa": 102600000.0,
        "std_ratio": 991500.0,
        "raw": {
            "best": 0.002181,
            "lr": 0.01,
            "finals": {"1e-04": 0.3601, "1e-03": 0.008237, "1e-02": 0.002181, "1e-01": 0.01817},
        },
        "standardized": {
            "best": 0.2313,
            "lr": 0.01,
            "finals": {"1e-04": 0.5215, "1e-03": 0.2942, "1e-02": 0.2313, "1e-01": 0.5884},
        },
        "label": "ok",
        "reason": "well scaled and raw training reaches 0.00218x the baseline",
    },
    "learning_rate_far_too_high": {
        "baseline": 1.0,
        "kappa": 1.192,
        "std_ratio": 1.062,
        "raw": {
            "best": 0.0003814,
            "lr": 0.01,
            "finals": {"1e-04": 0.2811, "1e-03": 0.007841, "1e-02": 0.0003814, "1e-01": 0.00697},
        },
        "standardized": {
            "best": 0.0001845,
            "lr": 0.01,
            "finals": {"1e-04": 0.2825, "1e-03": 0.007781, "1e-02": 0.0001845, "1e-01": 0.009063},
        },
        "user_lr": {"lr": 3.0, "raw": 11.68, "standardized": 1.066},
        "label": "ok",
        "reason": "well scaled; training fails with raw (11.7x) and "
        "rescaled (1.07x) inputs alike: another cause",
    },
    "softmax_into_cross_entropy": {
        "baseline": 0.9617,
        "kappa": 1.111,
        "std_ratio": 1.067,
        "raw": {
            "best": 0.5769,
            "lr": 0.1,
            "finals": {"1e-04": 0.7084, "1e-03": 0.6274, "1e-02": 0.5808, "1e-01": 0.5769},
        },
        "standardized": {
            "best": 0.5804,
            "lr": 0.01,
            "finals": {"1e-04": 0.7092, "1e-03": 0.6276, "1e-02": 0.5804, "1e-01": 0.5944},
        },
        "label": "ok",
        "reason": "well scaled; training fails with raw (0.6x) and "
        "rescaled (0.604x) inputs alike: another cause",
    },
    "targets_broadcast_wrongly": {
        "baseline": 1.0,
        "kappa": 1.211,
        "std_ratio": 1.143,
        "raw": {
            "best": 0.9963,
            "lr": 0.01,
            "finals": {"1e-04": 1.0, "1e-03": 0.9988, "1e-02": 0.9963, "1e-01": 1.004},
        },
        "standardized": {
            "best": 0.9966,
            "lr": 0.01,
            "finals": {"1e-04": 1.0, "1e-03": 0.9988, "1e-02": 0.9966, "1e-01": 1.024},
        },
        "label": "ok",
        "reason": "well scaled; training fails with raw (0.996x) and "
        "rescaled (0.997x) inputs alike: another cause",
    },
    "random_labels": {
        "baseline": 1.097,
        "kappa": 1.189,
        "std_ratio": 1.09,
        "raw": {
            "best": 0.994,
            "lr": 0.1,
            "finals": {"1e-04": 1.087, "1e-03": 1.067, "1e-02": 1.018, "1e-01": 0.994},
        },
        "standardized": {
            "best": 0.9796,
            "lr": 0.1,
            "finals": {"1e-04": 1.087, "1e-03": 1.067, "1e-02": 1.01, "1e-01": 0.9796},
        },
        "label": "ok",
        "reason": "well scaled; training fails with raw (0.906x) and rescaled "
        "(0.893x) inputs alike: another cause",
    },
    "oversized_init_tanh": {
        "baseline": 1.0,
        "kappa": 1.087,
        "std_ratio": 1.072,
        "raw": {
            "best": 0.08467,
            "lr": 0.01,
            "finals": {"1e-04": 0.2716, "1e-03": 0.1567, "1e-02": 0.08467, "1e-01": 0.09083},
        },
        "standardized": {
            "best": 0.06658,
            "lr": 0.1,
            "finals": {"1e-04": 0.2731, "1e-03": 0.1599, "1e-02": 0.09054, "1e-01": 0.06658},
        },
        "label": "ok",
        "reason": "well scaled and raw training reaches 0.0847x the baseline",
    },
}
