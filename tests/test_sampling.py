"""The sampler against the model's own full forward, computed independently step by step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marft.models.config import get_model_config
from marft.models.decoder import build_model
from marft.sampling import filter_logits, generate, prompt_bucket, shape_bucket

PROMPTS = np.array([[5, 6, 7, 8, 0, 0, 0],
                    [9, 10, 11, 12, 13, 14, 15],
                    [20, 0, 0, 0, 0, 0, 0]], np.int32)
LENGTHS = np.array([4, 7, 1], np.int32)


@pytest.fixture(scope="module")
def model():
  return build_model(get_model_config("tiny", num_layers=2), seed=3)


def _full_forward_logprobs(model, prompt, generated):
  """log-softmax of the full forward over prompt + generated, at each generated token."""
  sequence = jnp.asarray([list(prompt) + list(generated)], jnp.int32)
  logits = np.asarray(model(sequence)[0], np.float64)
  logits -= logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  start = len(prompt) - 1
  return logits, logp[start:start + len(generated)]


def test_greedy_is_argmax_of_full_forward_at_every_step(model):
  out = generate(model, PROMPTS, LENGTHS, jax.random.key(0), max_new_tokens=12, temperature=0.0)
  assert out.tokens.shape == (3, 12) and out.tokens.dtype == jnp.int32
  np.testing.assert_array_equal(out.lengths, [12, 12, 12])
  # A causal model's logits at position t ignore later tokens, so one fixed-width jitted forward
  # (zero-padded at the end) gives the next-token logits at every step.
  forward = jax.jit(lambda tokens: model(tokens))
  for b in range(3):
    sequence = list(PROMPTS[b, :LENGTHS[b]])
    for _ in range(12):
      padded = np.zeros((1, 32), np.int32)
      padded[0, :len(sequence)] = sequence
      logits = forward(jnp.asarray(padded))[0, len(sequence) - 1]
      sequence.append(int(jnp.argmax(logits)))
    np.testing.assert_array_equal(out.tokens[b], sequence[LENGTHS[b]:])


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8)])
def test_sampled_logprobs_are_unmodified_model_logprobs(model, temperature, top_k, top_p):
  out = generate(model, PROMPTS, LENGTHS, jax.random.key(1), max_new_tokens=9,
                 temperature=temperature, top_k=top_k, top_p=top_p)
  assert out.logprobs.dtype == jnp.float32
  for b in range(3):
    generated = np.asarray(out.tokens[b])
    _, logp = _full_forward_logprobs(model, PROMPTS[b, :LENGTHS[b]], generated)
    expected = logp[np.arange(len(generated)), generated]
    np.testing.assert_allclose(out.logprobs[b], expected, atol=2e-5)
    if top_k:  # every sampled token is inside the top-k of its step
      ranks = (logp > expected[:, None]).sum(-1)
      assert ranks.max() < top_k


def test_same_key_same_tokens_other_key_other_tokens(model):
  kwargs = dict(max_new_tokens=16, temperature=1.0)
  a = generate(model, PROMPTS, LENGTHS, jax.random.key(7), **kwargs)
  b = generate(model, PROMPTS, LENGTHS, jax.random.key(7), **kwargs)
  c = generate(model, PROMPTS, LENGTHS, jax.random.key(8), **kwargs)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logprobs, b.logprobs)
  assert not np.array_equal(a.tokens, c.tokens)


def test_stop_tokens_and_row_limits(model):
  greedy = generate(model, PROMPTS, LENGTHS, jax.random.key(0), max_new_tokens=12,
                    temperature=0.0)
  stop = int(greedy.tokens[0, 3])  # row 0 meets this token at step 3 (or earlier)
  first = int(np.argmax(np.asarray(greedy.tokens[0]) == stop))
  out = generate(model, PROMPTS, LENGTHS, jax.random.key(0), max_new_tokens=12,
                 temperature=0.0, stop_ids=(stop,), max_lengths=np.array([12, 5, 12]),
                 pad_id=99)
  assert int(out.lengths[0]) == first + 1
  np.testing.assert_array_equal(out.tokens[0, :first + 1], greedy.tokens[0, :first + 1])
  assert np.all(np.asarray(out.tokens[0, first + 1:]) == 99)
  assert np.all(np.asarray(out.logprobs[0, first + 1:]) == 0.0)
  # Row 1 is cut at its own limit of 5 unless it met the stop token first.
  stops1 = np.flatnonzero(np.asarray(greedy.tokens[1]) == stop)
  expected1 = min(5, stops1[0] + 1) if len(stops1) else 5
  assert int(out.lengths[1]) == expected1
  assert np.all(np.asarray(out.tokens[1, expected1:]) == 99)


def test_padding_width_and_batch_do_not_change_results(model):
  base = generate(model, PROMPTS, LENGTHS, jax.random.key(0), max_new_tokens=6, temperature=0.0)
  wide = np.zeros((3, 40), np.int32)
  wide[:, :7] = PROMPTS
  widened = generate(model, wide, LENGTHS, jax.random.key(0), max_new_tokens=6, temperature=0.0)
  np.testing.assert_array_equal(base.tokens, widened.tokens)
  single = generate(model, PROMPTS[1:2], LENGTHS[1:2], jax.random.key(0), max_new_tokens=6,
                    temperature=0.0)
  np.testing.assert_array_equal(single.tokens[0], base.tokens[1])
  assert prompt_bucket(7) == 16 and prompt_bucket(17) == 32 and prompt_bucket(64) == 64


def test_batch_buckets_bound_compilations_and_keep_each_rows_draws(model):
  """Batches of 33..48 rows share one compiled shape (48), and a row's sampled tokens do not
  depend on how many rows follow it (49 rows: another bucket); mutation: padding the batch to a
  multiple of 8 only (40 and 48: two shapes), or sampling that depends on the batch size."""
  from marft.compiles import CompileCounter
  rng = np.random.default_rng(0)
  prompts = rng.integers(5, 100, (49, 7)).astype(np.int32)
  lengths = rng.integers(1, 8, 49).astype(np.int32)
  sample = lambda b: generate(model, prompts[:b], lengths[:b], jax.random.key(4),
                              max_new_tokens=4, temperature=1.0).tokens
  first = sample(33)
  with CompileCounter.delta() as compiles:
    outs = {b: sample(b) for b in (34, 40, 41, 48)}
  assert compiles.count == 0, compiles
  for tokens in outs.values():
    np.testing.assert_array_equal(tokens[:33], first)
  np.testing.assert_array_equal(sample(49)[:48], outs[48])


def test_shape_bucket_is_the_smallest_power_of_two_or_one_and_a_half_times_one():
  ladder = sorted({2**e for e in range(12)} | {3 * 2**e for e in range(11)})
  for size in range(1, 1500):
    expected = min(b for b in ladder if b >= max(size, 16))
    assert shape_bucket(size) == expected, size
  assert [shape_bucket(n, 1) for n in (1, 2, 3, 5, 7, 13)] == [1, 2, 3, 6, 8, 16]


def test_filter_logits_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 50)).astype(np.float32)
  got = np.asarray(filter_logits(jnp.asarray(logits), temperature=0.5, top_k=7, top_p=1.0))
  for row, out in zip(logits, got):
    keep = np.argsort(-row)[:7]
    assert set(np.flatnonzero(out > -1e30)) == set(keep)
    np.testing.assert_allclose(out[keep], row[keep] / 0.5, rtol=1e-6)
  got = np.asarray(filter_logits(jnp.asarray(logits), temperature=1.0, top_k=0, top_p=0.6))
  for row, out in zip(logits, got):
    order = np.argsort(-row)
    probs = np.exp(row[order] - row.max())
    probs /= probs.sum()
    n_keep = int(np.searchsorted(np.cumsum(probs), 0.6) + 1)  # smallest set with mass >= 0.6
    assert set(np.flatnonzero(out > -1e30)) == set(order[:n_keep])


def test_bad_arguments_are_clear_errors(model):
  with pytest.raises(ValueError, match="max_new_tokens"):
    generate(model, PROMPTS, LENGTHS, jax.random.key(0), max_new_tokens=0)
  with pytest.raises(ValueError, match="length"):
    generate(model, PROMPTS, np.array([0, 1, 1]), jax.random.key(0), max_new_tokens=2)
  with pytest.raises(ValueError, match="top_p"):
    generate(model, PROMPTS, LENGTHS, jax.random.key(0), max_new_tokens=2, top_p=0.0)


def test_per_row_stop_ids(model):
  greedy = generate(model, PROMPTS, LENGTHS, jax.random.key(0), max_new_tokens=12,
                    temperature=0.0)
  tokens = np.asarray(greedy.tokens)
  # Row b stops at its own token tokens[b, b + 2]; the other rows' stop tokens do not apply.
  per_row = np.full((3, 2), -1, np.int32)
  for b in range(3):
    per_row[b, 0] = tokens[b, b + 2]
  out = generate(model, PROMPTS, LENGTHS, jax.random.key(0), max_new_tokens=12,
                 temperature=0.0, stop_ids=per_row)
  for b in range(3):
    first = int(np.argmax(tokens[b] == per_row[b, 0]))
    assert int(out.lengths[b]) == first + 1


def _numpy_sampling_distribution(logits, temperature, top_k, top_p):
  """The exact distribution `generate` should draw from: softmax(logits / T) restricted to
  the top-k tokens, then to the nucleus (the smallest set of most likely tokens whose mass
  reaches top_p; Holtzman et al. 2020, Sec. 3.1), renormalised."""
  z = np.asarray(logits, np.float64) / temperature
  keep = np.ones(z.shape, bool)
  if top_k:
    keep[np.argsort(-z)[top_k:]] = False
  if top_p < 1.0:
    order = [i for i in np.argsort(-z) if keep[i]]
    probs = np.exp(z[order] - z[order].max())
    probs /= probs.sum()
    mass_before = np.cumsum(probs) - probs
    keep[:] = False
    keep[np.asarray(order)[mass_before < top_p]] = True
  p = np.where(keep, np.exp(z - z.max()), 0.0)
  return p / p.sum()


@pytest.fixture(scope="module")
def peaked():
  model = build_model(get_model_config("tiny", num_layers=1), seed=3)
  # Logits scale linearly with the final norm's weight: x10 gives logits of std ~2, so the
  # temperature and the truncation change the distribution by far more than sampling noise.
  model.final_norm.weight[...] = model.final_norm.weight[...] * 10.0
  return model


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.5, 0, 1.0), (1.6, 12, 1.0),
                                                     (0.8, 0, 0.7), (1.3, 20, 0.9)])
def test_first_token_frequencies_follow_the_tempered_truncated_distribution(
    peaked, temperature, top_k, top_p):
  """Chi-square goodness of fit of 2048 first tokens against the numpy distribution."""
  from scipy import stats
  prompt = PROMPTS[0, :LENGTHS[0]]
  logits = np.asarray(peaked(jnp.asarray(prompt[None], jnp.int32))[0, -1])
  assert logits.std() > 1.0
  expected = _numpy_sampling_distribution(logits, temperature, top_k, top_p)
  draws = 2048
  out = generate(peaked, np.tile(prompt, (draws, 1)), np.full(draws, len(prompt)),
                 jax.random.key(0), max_new_tokens=1, temperature=temperature, top_k=top_k,
                 top_p=top_p)
  counts = np.bincount(np.asarray(out.tokens[:, 0]), minlength=len(expected))
  assert counts[expected == 0].sum() == 0  # nothing outside the top-k / nucleus
  # Pool the bins expected to hold fewer than 5 draws (the test's validity condition).
  big = expected * draws >= 5
  observed = np.append(counts[big], counts[~big].sum())
  want = np.append(expected[big], expected[~big].sum()) * draws
  observed, want = observed[want > 0], want[want > 0]
  assert len(want) >= 3
  p_value = stats.chisquare(observed, want).pvalue
  assert p_value > 1e-3, (p_value, observed, want.round(1))
