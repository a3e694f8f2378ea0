"""MASPRM functions against hand-computed numbers and numpy written in the test."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algorithms.prm import masprm

ATANH_95 = 1.8317808230648225  # atanh(0.95) = 0.5 * ln(1.95 / 0.05) = 0.5 * ln 39


def test_grade_terminal():
  assert masprm.grade_terminal(True) == 1.0 and masprm.grade_terminal(False) == -1.0


def test_value_targets_by_hand():
  y, visited = masprm.value_targets(jnp.array([3.0, -1.0, 0.0, 0.5, -3.0]),
                                    jnp.array([4, 1, 0, 2, 3], jnp.int32))
  np.testing.assert_allclose(y, [0.75, -1.0, 0.0, 0.25, -1.0], rtol=1e-7)
  np.testing.assert_array_equal(visited, [True, True, False, True, True])


def test_informative_tree_bounds_inclusive():
  assert masprm.informative_tree(-0.7) and masprm.informative_tree(0.7)
  assert masprm.informative_tree(0.0)
  assert not masprm.informative_tree(0.7001) and not masprm.informative_tree(-0.7001)
  assert not masprm.informative_tree(1.0) and not masprm.informative_tree(-1.0)
  assert masprm.informative_tree(0.9, low=-0.9, high=0.9)
  assert not masprm.informative_tree(-0.5, low=-0.4, high=0.9)


def test_logit_targets_match_numpy_and_clip_to_finite():
  np.testing.assert_allclose(ATANH_95, 0.5 * np.log(39.0), rtol=1e-15)
  y = np.array([-1.0, -0.99, -0.5, 0.0, 0.3, 0.95, 1.0], np.float32)
  got = np.asarray(masprm.logit_targets(jnp.asarray(y)))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, np.arctanh(np.clip(y.astype(np.float64), -0.95, 0.95)),
                             rtol=1e-6)
  np.testing.assert_allclose(got[[0, 1, -2, -1]], [-ATANH_95, -ATANH_95, ATANH_95, ATANH_95],
                             rtol=1e-6)
  np.testing.assert_allclose(masprm.logit_targets(jnp.array([1.0, 0.5]), clip=0.5),
                             [np.arctanh(0.5)] * 2, rtol=1e-6)
  # The value head inverts the target inside the clip range.
  np.testing.assert_allclose(masprm.prm_value(masprm.logit_targets(jnp.asarray(y[1:-1]))),
                             np.clip(y[1:-1], -0.95, 0.95), rtol=1e-6)
  np.testing.assert_allclose(masprm.prm_value(jnp.array([0.0, 2.0])), [0.0, np.tanh(2.0)],
                             rtol=1e-6)


def test_masprm_loss_zero_at_targets_and_by_hand():
  y = jnp.array([[1.0, 0.0, -0.5], [-1.0, 0.25, 0.0]])
  mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
  z = masprm.logit_targets(y)
  assert masprm.masprm_loss(z, y, mask) == 0.0
  # z = 0 everywhere: loss = mean over the 5 masked steps of atanh(clip(y))^2.
  want = (ATANH_95**2 + 0.0 + np.arctanh(0.5)**2 + ATANH_95**2 + np.arctanh(0.25)**2) / 5
  np.testing.assert_allclose(masprm.masprm_loss(jnp.zeros((2, 3)), y, mask), want, rtol=1e-6)


def test_masprm_loss_matches_numpy_and_analytic_gradient():
  rng = np.random.default_rng(0)
  z = rng.normal(0, 1.5, (4, 9)).astype(np.float32)
  y = rng.uniform(-1, 1, (4, 9)).astype(np.float32)
  y[0, :3] = [1.0, -1.0, 0.97]
  mask = (rng.random((4, 9)) < 0.5).astype(np.float32)
  mask[0, :3] = 1.0
  y[mask == 0] = np.nan  # off the mask y is ignored, also by the gradient
  count = mask.sum()
  t = np.arctanh(np.clip(np.nan_to_num(y).astype(np.float64), -0.95, 0.95))
  want = np.where(mask > 0, (z - t)**2, 0.0).sum() / count
  loss, grad = jax.value_and_grad(masprm.masprm_loss)(jnp.asarray(z), jnp.asarray(y),
                                                      jnp.asarray(mask))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(grad, np.where(mask > 0, 2 * (z - t), 0.0) / count, rtol=1e-5,
                             atol=1e-7)
  assert masprm.masprm_loss(jnp.asarray(z), jnp.zeros((4, 9)), jnp.zeros((4, 9))) == 0.0


@pytest.mark.parametrize("name", ["value_targets", "logit_targets", "masprm_loss", "prm_value"])
def test_jit_matches_eager(name):
  rng = np.random.default_rng(1)
  y = jnp.asarray(rng.uniform(-1, 1, (3, 4)).astype(np.float32))
  args = {"value_targets": (jnp.array([2.0, 0.0, -1.5]), jnp.array([4, 0, 3], jnp.int32)),
          "logit_targets": (y,),
          "masprm_loss": (jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), y,
                          jnp.asarray(rng.random((3, 4)) < 0.5, jnp.float32)),
          "prm_value": (y,)}[name]
  fn = getattr(masprm, name)
  for jitted, eager in zip(jax.tree_util.tree_leaves(jax.jit(fn)(*args)),
                           jax.tree_util.tree_leaves(fn(*args))):
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
