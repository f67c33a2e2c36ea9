"""Influence functions: LiSSA against the closed form on models whose Hessian is known."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from services.graph.influence import (
    LissaSettings,
    influence_scores,
    lissa,
    per_sample_dots,
    per_sample_losses,
)

RIDGE = 0.1


def _regression(n: int, d: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=d) + 0.3 * rng.normal(size=n)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def _loss(w: jnp.ndarray, z: dict) -> jnp.ndarray:
    """Ridge regression per sample: its Hessian is X^T X / n + RIDGE I, the same everywhere."""
    return 0.5 * (z["x"] @ w - z["y"]) ** 2 + 0.5 * RIDGE * jnp.sum(w**2)


def test_lissa_reaches_the_damped_inverse_hessian_product() -> None:
    train = _regression(400, 5, seed=0)
    x = np.asarray(train["x"], np.float64)
    hessian = x.T @ x / len(x) + RIDGE * np.eye(5)
    v = jnp.asarray(np.random.default_rng(1).normal(size=5), jnp.float32)
    settings = LissaSettings(damping=0.01, scale=10.0, depth=600, repeats=3, batch=400)
    found = np.asarray(lissa(_loss, jnp.zeros(5), train, v, settings))
    expected = np.linalg.solve(hessian + settings.scale * settings.damping * np.eye(5), v)
    np.testing.assert_allclose(found, expected, rtol=2e-3, atol=1e-4)
    # too few steps have not converged: the test can tell
    short = np.asarray(lissa(_loss, jnp.zeros(5), train, v, settings.__class__(depth=3)))
    assert np.abs(short - expected).max() > 0.05


def test_influence_on_a_linear_model_equals_the_closed_form() -> None:
    train, valid = _regression(300, 4, seed=2), _regression(50, 4, seed=3)
    x, y = np.asarray(train["x"], np.float64), np.asarray(train["y"], np.float64)
    n = len(x)
    w = np.linalg.solve(x.T @ x / n + RIDGE * np.eye(4), x.T @ y / n)  # the optimum
    hessian = x.T @ x / n + RIDGE * np.eye(4)
    per_sample = (x @ w - y)[:, None] * x + RIDGE * w  # ∇ℓ(z_i)
    xv, yv = np.asarray(valid["x"], np.float64), np.asarray(valid["y"], np.float64)
    valid_grad = ((xv @ w - yv)[:, None] * xv + RIDGE * w).mean(axis=0)
    settings = LissaSettings(damping=0.001, scale=10.0, depth=800, repeats=1, batch=300)
    ridge = settings.scale * settings.damping
    expected = per_sample @ np.linalg.solve(hessian + ridge * np.eye(4), valid_grad)
    found = influence_scores(_loss, jnp.asarray(w, jnp.float32), train, valid, settings)
    assert found.shape == (n,) and found.dtype == np.float32
    np.testing.assert_allclose(found, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    assert np.corrcoef(found, expected)[0, 1] > 0.999


def test_per_sample_dots_are_each_samples_own_gradient() -> None:
    train = _regression(37, 3, seed=5)  # not a multiple of the chunk: the last one is padded
    w, v = jnp.asarray([0.5, -1.0, 2.0]), jnp.asarray([1.0, 0.0, -1.0])
    x, y = np.asarray(train["x"]), np.asarray(train["y"])
    grads = (x @ np.asarray(w) - y)[:, None] * x + RIDGE * np.asarray(w)
    found = per_sample_dots(_loss, w, train, v, chunk=8)
    np.testing.assert_allclose(found, grads @ np.asarray(v), rtol=1e-4, atol=1e-4)
    assert found.std() > 0 and found[0] == pytest.approx(float(grads[0] @ np.asarray(v)), rel=1e-4)


def test_lissa_batches_are_seeded() -> None:
    train = _regression(200, 3, seed=6)
    v = jnp.asarray([1.0, -1.0, 0.5])
    settings = LissaSettings(scale=10.0, depth=50, repeats=1, batch=16, seed=7)
    first = np.asarray(lissa(_loss, jnp.zeros(3), train, v, settings))
    again = np.asarray(lissa(_loss, jnp.zeros(3), train, v, settings))
    other = np.asarray(lissa(_loss, jnp.zeros(3), train, v, settings.__class__(
        scale=10.0, depth=50, repeats=1, batch=16, seed=8)))  # fmt: skip
    assert np.array_equal(first, again) and not np.allclose(first, other, atol=1e-6)


def test_per_sample_losses_come_chunk_by_chunk_in_row_order() -> None:
    train = _regression(37, 3, seed=9)
    w = jnp.asarray([0.3, 0.2, -0.4])
    x, y = np.asarray(train["x"]), np.asarray(train["y"])
    expected = 0.5 * (x @ np.asarray(w) - y) ** 2 + 0.5 * RIDGE * float(np.sum(np.asarray(w) ** 2))
    found = per_sample_losses(_loss, w, train, chunk=8)
    assert found.dtype == np.float32 and found.shape == (37,)
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6)
