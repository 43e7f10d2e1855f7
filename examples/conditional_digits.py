"""Controllable generation on scikit-learn's 8×8 digits: class-conditional samples by
classifier-free guidance, classifier guidance with a noise-conditional classifier, and inpainting
of masked digits by the replacement method.

1. Trains one class-conditional score model (an MLP on the 64 pixels, VP SDE) with label
   dropout, so that the null label gives the unconditional score (Ho & Salimans 2021).
2. Trains a noise-conditional classifier p_t(y | x_t) (:class:`sdegen.guidance.NoisyClassifier`).
3. Samples every class with classifier-free guidance at w = 0 (the plain conditional score) and
   w = 2, with classifier guidance on the unconditional score, and unconditionally.
4. Inpaints test digits whose lower half is hidden.

A judge that never sees the generator (scikit-learn's logistic regression on clean training
digits, about 96% accurate on held-out digits) measures how often a sample is read as the class
asked for; unguided samples should score about 10% (chance), guided ones far more. Inpainting
is scored by the mean squared error of the hidden pixels against the truth, next to filling
them with the training mean, and by the judge's accuracy on the completed digits.

Run:  python examples/conditional_digits.py             (a few minutes on one CPU core)
      python examples/conditional_digits.py --tiny      (< 60 s, for CI; or SDEGEN_TINY=1)
Outputs (in --out, default runs/conditional_digits): class_conditional.png (one row per
class: w = 0, w = 2, classifier guidance), inpainting.png (truth / masked / completed rows).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

import sdegen
from sdegen import guidance
from sdegen.data import from_model_space, load_digits, to_model_space
from sdegen.models import MLP
from sdegen.plotting import save_image_grid

LEVELS = 17


def judge_accuracy(judge: LogisticRegression, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of model-space images ``x`` (N, 64) that the judge reads as ``labels``."""
    levels = from_model_space(x, LEVELS).reshape(x.shape[0], -1).numpy()
    return float((judge.predict(levels) == labels.numpy()).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a < 60 s run for CI")
    parser.add_argument("--out", default="runs/conditional_digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tiny = args.tiny or os.environ.get("SDEGEN_TINY", "") not in ("", "0")
    torch.manual_seed(args.seed)
    start = time.time()
    steps, clf_steps, per_class, sample_steps = (
        (1000, 300, 10, 100) if tiny else (12000, 3000, 40, 500)
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train, test = load_digits("train"), load_digits("test")
    gen = torch.Generator().manual_seed(args.seed)
    x_train = to_model_space(train.images, LEVELS, generator=gen).reshape(-1, 64)
    judge = LogisticRegression(max_iter=2000).fit(
        train.images.reshape(-1, 64).numpy(), train.labels.numpy()
    )
    judge_test = float(
        (judge.predict(test.images.reshape(-1, 64).numpy()) == test.labels.numpy()).mean()
    )
    print(f"judge (logistic regression) accuracy on held-out digits: {judge_test:.3f}")

    # 1. A class-conditional score model; label dropout trains the null label.
    sde = sdegen.VPSDE()
    model = sdegen.ScoreModel(MLP(64, hidden=256, depth=4, num_classes=10), sde, "eps")
    loss = sdegen.DenoisingScoreMatching(sde, label_dropout=0.15, num_classes=10)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = sdegen.Trainer(
            model, loss, x_train, labels=train.labels, out_dir=run_dir, batch_size=256,
            lr=2e-3, warmup_steps=100, ema_decay=0.99 if tiny else 0.999, device="cpu",
            seed=args.seed, checkpoint_every=10**9, log_every=10**9, progress=False,
        )  # fmt: skip
        result = trainer.fit(steps)
        score_model = trainer.ema_model
    print(
        f"score model: {steps} steps, final loss {float(result.losses[-100:].mean()):.3f} "
        f"({time.time() - start:.0f} s)"
    )

    # 2. A noise-conditional classifier for classifier guidance.
    classifier = guidance.NoisyClassifier(sde, (64,), 10, hidden=256, depth=3)
    trained = guidance.train_classifier(
        classifier, sde, x_train, train.labels, steps=clf_steps, lr=2e-3, generator=gen
    )
    last = float(trained.accuracy[-50:].mean())
    print(f"noisy classifier: batch accuracy (t uniform on [t_min, T]), last 50 steps {last:.3f}")

    # 3. Class-conditional samples.
    labels = torch.arange(10).repeat_interleave(per_class)
    uncond = score_model.bind(None)
    scores = {
        "unguided (null label)": uncond,
        "classifier-free, w = 0": guidance.classifier_free_guidance(
            score_model.bind(labels), uncond, 0.0
        ),
        "classifier-free, w = 2": guidance.classifier_free_guidance(
            score_model.bind(labels), uncond, 2.0
        ),
        "classifier guidance, scale 2": guidance.classifier_guidance(
            uncond, classifier, labels, 2.0
        ),
    }
    grid = []
    with torch.no_grad():
        for name, score in scores.items():
            res = sdegen.sample(
                sde, score, (labels.numel(), 64), method="ancestral", steps=sample_steps,
                generator=torch.Generator().manual_seed(args.seed + 1),
            )  # fmt: skip
            acc = judge_accuracy(judge, res.samples, labels)
            print(f"judge accuracy on {name:30s} samples: {acc:.3f}  (nfe {res.nfe})")
            if name != "unguided (null label)":
                grid.append(res.samples.reshape(10, per_class, 1, 8, 8)[:, : min(per_class, 8)])
    images = torch.cat(grid, dim=1).reshape(-1, 1, 8, 8)
    save_image_grid(images, out / "class_conditional.png", nrow=images.shape[0] // 10)

    # 4. Inpainting: the lower half of held-out digits is hidden.
    n = 40 if tiny else 200
    truth = to_model_space(test.images[:n], LEVELS, dequantize=False).reshape(n, 64)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True  # the upper half is observed
    mask = mask.reshape(64)
    with torch.no_grad():
        res = guidance.inpaint(
            sde, uncond, truth, mask, steps=sample_steps, corrector_steps=2, snr=0.16,
            generator=torch.Generator().manual_seed(args.seed + 2),
        )  # fmt: skip
    hidden = ~mask
    # A completion is a sample of p(x_hidden | x_observed), so compare it with another sample
    # that ignores the observation: the lower half of a random training digit.
    donors = x_train[torch.randint(0, x_train.shape[0], (n,), generator=gen)]
    pasted = torch.where(mask, truth, donors)
    mse = float(((res.samples - truth)[:, hidden] ** 2).mean())
    mse_pasted = float(((pasted - truth)[:, hidden] ** 2).mean())
    acc = judge_accuracy(judge, res.samples, test.labels[:n])
    acc_pasted = judge_accuracy(judge, pasted, test.labels[:n])
    masked = torch.where(mask, truth, torch.zeros_like(truth))
    print(
        f"inpainting (lower half hidden, {n} test digits, nfe {res.nfe}): MSE of hidden pixels "
        f"{mse:.3f} (random training lower half: {mse_pasted:.3f}); judge accuracy {acc:.3f} "
        f"(random lower half: {acc_pasted:.3f})"
    )
    rows = min(n, 10)
    tiles = torch.stack([truth[:rows], masked[:rows], res.samples[:rows]]).reshape(-1, 1, 8, 8)
    save_image_grid(tiles, out / "inpainting.png", nrow=rows)
    print(f"wrote {out / 'class_conditional.png'} and {out / 'inpainting.png'}")
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
