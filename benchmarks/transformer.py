"""A small decoder-only Transformer in plain JAX, for the character model.

Pre-norm blocks of causal multi-head self-attention and a GELU MLP of 4 times
the width, learned position embeddings and an untied output head. It uses
only operations that JAX 0.5.3 has, because Google's optimizer runs it there.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def init_params(rng: np.random.Generator, vocabulary: int, context: int, width: int, layers: int) -> dict:
    """Float32 parameters: matrices ~ N(0, 1 / fan_in), embeddings ~ N(0, 0.02^2)."""

    def matrix(fan_in, fan_out):
        return (rng.standard_normal((fan_in, fan_out)) / math.sqrt(fan_in)).astype(np.float32)

    def embedding(rows):
        return (rng.standard_normal((rows, width)) * 0.02).astype(np.float32)

    ones, zeros = np.ones(width, np.float32), np.zeros(width, np.float32)
    params = {"embedding": embedding(vocabulary), "position": embedding(context)}
    for layer in range(layers):
        prefix = f"layer{layer}/"
        params[prefix + "norm1/scale"], params[prefix + "norm1/bias"] = ones.copy(), zeros.copy()
        params[prefix + "attention/qkv"] = matrix(width, 3 * width)
        params[prefix + "attention/output"] = matrix(width, width)
        params[prefix + "norm2/scale"], params[prefix + "norm2/bias"] = ones.copy(), zeros.copy()
        params[prefix + "mlp/w1"] = matrix(width, 4 * width)
        params[prefix + "mlp/b1"] = np.zeros(4 * width, np.float32)
        params[prefix + "mlp/w2"] = matrix(4 * width, width)
        params[prefix + "mlp/b2"] = zeros.copy()
    params["final_norm/scale"], params["final_norm/bias"] = ones, zeros
    params["head"] = matrix(width, vocabulary)
    return params


def layer_norm(x, scale, bias):
    mean = x.mean(axis=-1, keepdims=True)
    variance = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + 1e-5) * scale + bias


def attention(x, qkv, output, heads: int):
    batch, length, width = x.shape
    head_width = width // heads
    query, key, value = jnp.split(x @ qkv, 3, axis=-1)
    query, key, value = (t.reshape(batch, length, heads, head_width) for t in (query, key, value))

    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(head_width)
    causal = jnp.tril(jnp.ones((length, length), bool))
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)

    mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, length, width)
    return mixed @ output


def logits(params: dict, tokens: jax.Array, layers: int, heads: int) -> jax.Array:
    """Next-token logits [batch, length, vocabulary] for int tokens [batch, length]."""
    x = params["embedding"][tokens] + params["position"][: tokens.shape[1]]
    for layer in range(layers):
        prefix = f"layer{layer}/"
        normed = layer_norm(x, params[prefix + "norm1/scale"], params[prefix + "norm1/bias"])
        x = x + attention(normed, params[prefix + "attention/qkv"], params[prefix + "attention/output"], heads)
        normed = layer_norm(x, params[prefix + "norm2/scale"], params[prefix + "norm2/bias"])
        hidden = jax.nn.gelu(normed @ params[prefix + "mlp/w1"] + params[prefix + "mlp/b1"])
        x = x + hidden @ params[prefix + "mlp/w2"] + params[prefix + "mlp/b2"]
    x = layer_norm(x, params["final_norm/scale"], params["final_norm/bias"])
    return x @ params["head"]
