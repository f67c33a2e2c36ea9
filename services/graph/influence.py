"""Influence functions (Koh & Liang 2017) over any differentiable per-sample loss: pure JAX math.

For a training sample ``z_i`` and parameters ``θ`` at a (local) optimum of the mean training loss
``L(θ)``, up-weighting ``z_i`` changes the validation loss by ``-∇L_val(θ)ᵀ H⁻¹ ∇ℓ(z_i, θ)``,
``H = ∇²L(θ)``. The **score** written here is its negative, ``∇L_val ᵀ H⁻¹ ∇ℓ(z_i)``: higher means
training on ``z_i`` lowers the validation loss more (the TGL-LLM selection keeps the helpful
ones, after dropping the very top as likely outliers).

``H⁻¹ v`` is never formed: LiSSA (Agarwal et al. 2017) iterates
``h_j = v + (1 - damping) h_{j-1} - H_B h_{j-1} / scale`` with ``H_B`` the Hessian of a fresh
seeded mini-batch of the training samples each step (a Hessian-vector product by forward-over-
reverse differentiation, never the matrix), and returns ``h_depth / scale`` averaged over
``repeats`` runs. Its fixed point is ``(H + scale·damping·I)⁻¹ v``: ``scale`` must exceed H's
largest eigenvalue for the recursion to converge, and ``scale·damping`` is the ridge that keeps
a flat direction from blowing up (what :func:`lissa` documents as its target, and what the tests
check it reaches).

Per-sample gradients are ``jax.vmap`` over ``jax.grad``, in chunks, and each is only dotted with
the one vector ``H⁻¹ ∇L_val``: ``n`` gradients are never held at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shared.config import InfluenceConfig as LissaSettings  # LiSSA's knobs: graph.influence

Params = Any  # a pytree of arrays
Samples = Any  # a pytree of arrays, each with the samples on axis 0
Loss = Callable[[Params, Samples], jax.Array]
"""``loss(params, sample) -> scalar`` of one sample (no leading axis)."""


def num_samples(samples: Samples) -> int:
    return int(jax.tree.leaves(samples)[0].shape[0])


def take(samples: Samples, index: np.ndarray | jax.Array) -> Samples:
    return jax.tree.map(lambda a: a[index], samples)


def tree_dot(a: Params, b: Params) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def mean_loss(loss: Loss, params: Params, samples: Samples) -> jax.Array:
    return jnp.mean(jax.vmap(loss, in_axes=(None, 0))(params, samples))


def mean_gradient(loss: Loss, params: Params, samples: Samples, chunk: int = 256) -> Params:
    """``∇`` of the mean loss over ``samples``, summed chunk by chunk."""
    n = num_samples(samples)
    grad = jax.jit(jax.grad(lambda p, s: jnp.sum(jax.vmap(loss, in_axes=(None, 0))(p, s))))
    total = None
    for start in range(0, n, chunk):
        part = grad(params, take(samples, np.arange(start, min(n, start + chunk))))
        total = part if total is None else jax.tree.map(jnp.add, total, part)
    return jax.tree.map(lambda g: g / n, total)


def hvp(loss: Loss, params: Params, samples: Samples, vector: Params) -> Params:
    """``H v`` of the mean loss over ``samples`` (forward-over-reverse; no matrix)."""
    grad = jax.grad(lambda p: mean_loss(loss, p, samples))
    return jax.jvp(grad, (params,), (vector,))[1]


def lissa(
    loss: Loss, params: Params, train: Samples, vector: Params, settings: LissaSettings
) -> Params:
    """``≈ (H + scale·damping·I)⁻¹ vector``, ``H`` the Hessian of the mean loss over ``train``."""
    n = num_samples(train)
    batch = min(settings.batch, n)
    rng = np.random.default_rng(settings.seed)
    d, s = settings.damping, settings.scale

    @jax.jit
    def step(h: Params, index: jax.Array) -> Params:
        hv = hvp(loss, params, take(train, index), h)
        return jax.tree.map(lambda v, h_, x: v + (1.0 - d) * h_ - x / s, vector, h, hv)

    runs = []
    for _ in range(settings.repeats):
        h = vector
        for _ in range(settings.depth):
            h = step(h, jnp.asarray(rng.choice(n, size=batch, replace=False)))
        runs.append(jax.tree.map(lambda x: x / s, h))
    return jax.tree.map(lambda *xs: sum(xs) / len(xs), *runs)


def per_sample_dots(
    loss: Loss, params: Params, samples: Samples, vector: Params, chunk: int = 16
) -> np.ndarray:
    """``[n]``: each sample's gradient ``∇ℓ(z_i)`` dotted with ``vector`` (vmap over grad)."""
    one = jax.grad(loss)

    @jax.jit
    def dots(part: Samples) -> jax.Array:
        return jax.vmap(lambda z: tree_dot(one(params, z), vector))(part)

    n = num_samples(samples)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        index = np.arange(start, min(n, start + chunk))
        if len(index) < chunk:  # one shape per run: pad the last chunk with its first sample
            padded = np.concatenate([index, np.full(chunk - len(index), index[0])])
            out[index] = np.asarray(dots(take(samples, padded)))[: len(index)]
        else:
            out[index] = np.asarray(dots(take(samples, index)))
    return out


def per_sample_losses(loss: Loss, params: Params, samples: Samples, chunk: int = 256) -> np.ndarray:
    """``[n]`` float32: each sample's loss, ``chunk`` at a time (a vmapped loss may gather a
    large per-sample table, such as a step's entity matrix: all rows at once would not fit)."""
    losses = jax.jit(jax.vmap(loss, in_axes=(None, 0)))
    n = num_samples(samples)
    return np.concatenate([
        np.asarray(losses(params, take(samples, np.arange(start, min(n, start + chunk)))))
        for start in range(0, n, chunk)
    ]).astype(np.float32)  # fmt: skip


def influence_scores(
    loss: Loss, params: Params, train: Samples, valid: Samples, settings: LissaSettings
) -> np.ndarray:
    """``[n_train]`` float32: ``∇L_valᵀ (H + scale·damping·I)⁻¹ ∇ℓ(z_i)`` for every training
    sample (higher: more helpful to the validation loss)."""
    s_test = lissa(loss, params, train, mean_gradient(loss, params, valid), settings)
    return per_sample_dots(loss, params, train, s_test, settings.chunk)
