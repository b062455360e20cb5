"""Figures of a Predictor's predictions: sample grid, decision boundary, confusion matrix.

Every function takes standardized features (as in a core.data Split) and class indices,
draws in the data's raw units, and saves a PNG atomically through app.figures.save_figure.
matplotlib and seaborn are imported inside the functions (slow imports; headless Agg).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.config import ConfigError
from core.predict import Predictor, confusion_matrix, evaluate_scores

MISTAKE = "#d62728"  # red: wrong predictions, in every figure
CORRECT = "#222222"


def _palette(k: int) -> list:
    """k class colours without tab10's red, which marks mistakes."""
    import seaborn as sns

    colors = [c for i, c in enumerate(sns.color_palette("tab10")) if i != 3]
    return colors[:k] if k <= len(colors) else sns.color_palette("husl", k)


def _require_classifier(predictor: Predictor, what: str) -> None:
    if not predictor.is_classifier:
        raise ConfigError(f"{what}: needs a classification checkpoint; this one is regression")


def plot_grid(
    predictor: Predictor,
    X: np.ndarray,
    y: np.ndarray,
    path: str | Path,
    n: int,
    *,
    title: str = "",
) -> Path:
    """n x n panels of the first n*n samples, each titled "pred / true", mistakes in red.

    Image data (digits) shows the image; 2-D data shows the sample (large marker, coloured
    by its predicted class) over all given samples in grey; anything else shows the class
    probabilities as bars.
    """
    from .figures import pyplot, save_figure

    _require_classifier(predictor, "plot_grid")
    if n < 1:
        raise ConfigError(f"plot_grid: n = {n} is out of range; allowed: 1 <= n")
    plt = pyplot()
    m = min(n * n, len(X))
    S = predictor.scores(X)
    pred = predictor.predict_index(S)
    labels, palette = predictor.labels, _palette(len(predictor.labels))
    X_raw = predictor.unstandardize(X)
    fig, axes = plt.subplots(n, n, figsize=(1.45 * n, 1.6 * n), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= m:
            ax.axis("off")
            continue
        wrong = pred[i] != y[i]
        if predictor.image_shape is not None:
            ax.imshow(
                X_raw[i].reshape(predictor.image_shape), cmap="gray_r", interpolation="nearest"
            )
        elif predictor.n_features == 2:
            # context: all samples, faintly coloured by their true class
            ax.scatter(X_raw[:, 0], X_raw[:, 1], s=2, c=[palette[c] for c in y], alpha=0.25)
            ax.set_aspect("equal", adjustable="box")
            ax.scatter(*X_raw[i], s=60, color=palette[pred[i]], edgecolor="black", zorder=3)
        else:
            ax.bar(range(len(labels)), S[i], color=palette)
            ax.set_ylim(0, 1)
            if len(labels) <= 10:  # class labels under the probability bars
                ax.set_xticks(range(len(labels)), labels, fontsize=6)
                ax.tick_params(axis="x", length=0, pad=1)
        color = MISTAKE if wrong else CORRECT
        ax.set_title(f"{labels[pred[i]]} / {labels[y[i]]}", fontsize=8, color=color)
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(2.5 if wrong else 0.5)
    n_wrong = int(np.sum(pred[:m] != y[:m]))
    fig.suptitle(f"{title}\npredicted / true, {n_wrong} of {m} wrong (red)".strip(), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def boundary_grid(
    predictor: Predictor, X_raw: np.ndarray, resolution: int, margin: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xx, yy, scores): a resolution^2 mesh in raw units around X_raw, and (r, r, k) scores."""
    lo, hi = X_raw.min(axis=0), X_raw.max(axis=0)
    pad = margin * np.maximum(hi - lo, 1e-9)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    xx, yy = np.meshgrid(xs, ys)  # (r, r) each
    S = predictor.scores(predictor.standardize(np.column_stack([xx.ravel(), yy.ravel()])))
    return xx, yy, S.reshape(resolution, resolution, -1)


def plot_boundary(
    predictor: Predictor,
    X: np.ndarray,
    y: np.ndarray,
    path: str | Path,
    *,
    resolution: int = 200,
    title: str = "",
) -> Path:
    """Decision regions of a 2-D classifier with the given samples on top.

    Two classes: filled contours of p(second class) with the p = 0.5 boundary in black.
    More: regions coloured by predicted class, paler where the top probability is low.
    Samples are coloured by their true class; wrong predictions get a red ring.
    """
    from matplotlib.colors import to_rgb

    from .figures import pyplot, save_figure

    _require_classifier(predictor, "plot_boundary")
    if predictor.n_features != 2:
        raise ConfigError(
            f"plot_boundary: needs 2-D data; this checkpoint has {predictor.n_features} features"
        )
    plt = pyplot()
    labels = predictor.labels
    k = len(labels)
    palette = _palette(k)
    X_raw = predictor.unstandardize(X)
    xx, yy, S = boundary_grid(predictor, X_raw, resolution)
    S_samples = predictor.scores(X)
    pred = predictor.predict_index(S_samples)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    if k == 2:
        cs = ax.contourf(
            xx, yy, S[..., 1], levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.75
        )
        ax.contour(xx, yy, S[..., 1], levels=[0.5], colors="black", linewidths=1.5)
        fig.colorbar(cs, ax=ax, label=f"p(class {labels[1]})", ticks=np.linspace(0, 1, 6))
        point_colors = ["#2166ac", "#b2182b"]  # the ends of RdBu_r
    else:
        region = S.argmax(axis=2)  # (r, r)
        confidence = (S.max(axis=2) - 1 / k) / (1 - 1 / k)  # 0 at a tie of all, 1 when sure
        rgb = np.array([to_rgb(c) for c in palette])[region]  # (r, r, 3)
        alpha = 0.15 + 0.45 * np.clip(confidence, 0, 1)[..., None]
        image = 1 - alpha * (1 - rgb)  # blend towards white
        extent = (xx.min(), xx.max(), yy.min(), yy.max())
        ax.imshow(image, origin="lower", extent=extent, aspect="auto", interpolation="nearest")
        ax.contour(xx, yy, region, levels=np.arange(k) + 0.5, colors="black", linewidths=0.8)
        point_colors = palette
    for c in range(k):
        sel = y == c
        ax.scatter(
            X_raw[sel, 0],
            X_raw[sel, 1],
            s=18,
            color=point_colors[c],
            edgecolor="white",
            linewidth=0.5,
            label=f"class {labels[c]}",
        )
    wrong = pred != y
    ax.scatter(
        X_raw[wrong, 0],
        X_raw[wrong, 1],
        s=70,
        facecolor="none",
        edgecolor=MISTAKE,
        linewidth=1.6,
        label=f"wrong ({int(wrong.sum())})",
    )
    ax.set_xlabel(predictor.feature_names[0])
    ax.set_ylabel(predictor.feature_names[1])
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    acc = evaluate_scores(predictor, S_samples, y)[1] if len(y) else float("nan")
    ax.set_title(f"{title}\ndecision boundary, accuracy {acc:.3f}".strip(), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(
    predictor: Predictor, X: np.ndarray, y: np.ndarray, path: str | Path, *, title: str = ""
) -> np.ndarray:
    """Heatmap of the confusion matrix (rows true, columns predicted); returns the counts."""
    import seaborn as sns

    from .figures import pyplot, save_figure

    _require_classifier(predictor, "plot_confusion")
    plt = pyplot()
    labels = predictor.labels
    S = predictor.scores(X)
    M = confusion_matrix(y, predictor.predict_index(S), len(labels))
    size = 2.5 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(
        M,
        annot=True,
        fmt="d",
        cmap="Blues",
        cbar=True,
        square=True,
        ax=ax,
        xticklabels=labels,
        yticklabels=labels,
        linewidths=0.5,
        linecolor="white",
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = evaluate_scores(predictor, S, y)[1] if len(y) else 0.0
    ax.set_title(
        f"{title}\nconfusion matrix, accuracy {acc:.3f} (n={M.sum()})".strip(), fontsize=10
    )
    fig.tight_layout()
    save_figure(fig, path)
    return M
