"""The taste model is River's BiasedMF: sample by sample equal, a minibatch its summed step."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from river import optim, reco

from pipeline.models.reco.taste import TasteModel, UserRows
from pipeline.serde.snapshots import seal, unseal

K = 4


def twins(users: int, items: int, seed: int = 3) -> tuple[TasteModel, reco.BiasedMF]:
    """A taste model and a River BiasedMF of the same set-up and the same initial vectors."""
    ours = TasteModel(n_factors=K, bias_lr=0.01, latent_lr=0.05, l2_bias=1e-3, l2_latent=1e-3)
    river = reco.BiasedMF(
        n_factors=K,
        bias_optimizer=optim.SGD(0.01),
        latent_optimizer=optim.SGD(0.05),
        l2_bias=1e-3,
        l2_latent=1e-3,
    )
    rng = np.random.default_rng(seed)
    for u in range(users):
        vector = rng.normal(0.0, 0.1, K)
        row = ours.user_rows[ours.users.setdefault(f"u{u}", ours.user_rows.add())]
        row[:K], row[K] = vector, 1.0
        river.u_latents[f"u{u}"] = vector.copy()
    for i in range(items):
        vector = rng.normal(0.0, 0.1, K)
        ours.items.ensure(i)[i, :K] = vector
        ours.learned.ensure(i)[i] = True
        river.i_latents[i] = vector.copy()
    return ours, river


def test_learning_one_sample_at_a_time_matches_river_biased_mf() -> None:
    ours, river = twins(users=5, items=8)
    rng = np.random.default_rng(11)
    for step in range(2_000):
        user, item, y = f"u{rng.integers(5)}", int(rng.integers(8)), float(rng.random())
        assert ours.predict_one(user, item) == pytest.approx(river.predict_one(user, item))
        if step % 2:
            ours.learn_one(user, item, y)
        else:
            ours.learn(user, np.array([item]), np.array([y]))
        river.learn_one(user, item, y)
    for u in range(5):
        np.testing.assert_allclose(ours.user_vector(f"u{u}")[:K], river.u_latents[f"u{u}"])
        assert ours.user_bias(f"u{u}") == pytest.approx(river.u_biases[f"u{u}"])
    for i in range(8):
        np.testing.assert_allclose(ours.items.data[i, :K], river.i_latents[i])
        assert ours.items.data[i, K] == pytest.approx(river.i_biases[i])


def test_a_minibatch_steps_by_the_gradients_of_its_samples_at_the_same_parameters() -> None:
    ours, _ = twins(users=1, items=6)
    user, rows, targets = "u0", np.array([0, 3, 5]), np.array([1.0, 0.0, 0.0])
    u, b = ours.user_vector(user).copy(), 0.0
    items = ours.items.data[:6].copy()
    mean = targets.mean()  # the global mean learns the targets first, as River's does
    gradients = 2.0 * (items[rows] @ u + mean + b - targets)
    ours.learn(user, rows, targets)
    expected_u = u[:K] - 0.05 * (gradients @ items[rows, :K] + 3 * 1e-3 * u[:K])
    np.testing.assert_allclose(ours.user_vector(user)[:K], expected_u)
    for g, row in zip(gradients, rows, strict=True):
        np.testing.assert_allclose(
            ours.items.data[row, :K], items[row, :K] - 0.05 * (g * u[:K] + 1e-3 * items[row, :K])
        )
        assert ours.items.data[row, K] == pytest.approx(-0.01 * g)
    assert ours.user_bias(user) == pytest.approx(-0.01 * gradients.sum())


def test_an_item_drawn_twice_in_a_minibatch_takes_both_its_steps() -> None:
    """A negative drawn twice (with replacement) is two samples: both gradients, both decays.

    A fancy-indexed assignment kept only the last of the two updates while the user and the
    global mean counted both (about 28 % of choices at 20 items).
    """
    ours, _ = twins(users=1, items=6)
    user, rows, targets = "u0", np.array([0, 4, 4, 2]), np.array([1.0, 0.0, 0.0, 0.0])
    u, b = ours.user_vector(user).copy(), 0.0
    items = ours.items.data[:6].copy()
    mean = targets.mean()
    gradients = 2.0 * (items[rows] @ u + mean + b - targets)
    ours.learn(user, rows, targets)
    twice = gradients[1] + gradients[2]
    np.testing.assert_allclose(
        ours.items.data[4, :K], items[4, :K] - 0.05 * (twice * u[:K] + 2 * 1e-3 * items[4, :K])
    )
    assert ours.items.data[4, K] == pytest.approx(items[4, K] - 0.01 * (twice + 2 * 1e-3 * 0.0))
    for g, row in ((gradients[0], 0), (gradients[3], 2)):  # the others as before
        np.testing.assert_allclose(
            ours.items.data[row, :K], items[row, :K] - 0.05 * (g * u[:K] + 1e-3 * items[row, :K])
        )
    expected_u = u[:K] - 0.05 * (gradients @ items[rows, :K] + 4 * 1e-3 * u[:K])
    np.testing.assert_allclose(ours.user_vector(user)[:K], expected_u)


def test_predicting_and_scoring_never_add_users_or_items() -> None:
    taste = TasteModel(n_factors=K, seed=2)
    assert taste.predict_one("nobody", 10) == 0.0
    assert taste.scores("nobody", 3).tolist() == [0.0, 0.0, 0.0]
    assert not taste.knows("nobody") and not taste.learned.data.any()
    taste.learn_one("u", 2, 1.0)
    assert taste.knows("u") and taste.learned.data.nonzero()[0].tolist() == [2]
    assert taste.scores("u", 4)[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0]  # unlearned items


def test_minibatches_step_as_river_does_sample_by_sample_duplicates_included() -> None:
    """Each batched step equals River's ``learn_one`` on each sample from the same parameters.

    Every sample of a batch is learnt by its own copy of River's BiasedMF taken at the
    batch's start (its global mean already holding the batch's other targets, as ours
    learns them all first), and the copies' changes are added up; an item drawn twice
    is two samples. After each batch every parameter equals River's.
    """
    ours, river = twins(users=3, items=6)
    rng = np.random.default_rng(17)
    duplicated = 0
    for _ in range(200):
        user = f"u{rng.integers(3)}"
        rows = rng.integers(6, size=int(rng.integers(1, 9)))  # with replacement, as negatives
        targets = np.where(np.arange(len(rows)) == 0, 1.0, 0.0)
        duplicated += len(set(rows.tolist())) < len(rows)
        start = copy.deepcopy(river)
        steps: dict[tuple[str, object], np.ndarray | float] = {}
        for n, (row, target) in enumerate(zip(rows.tolist(), targets.tolist(), strict=True)):
            alone = copy.deepcopy(start)
            for other, y in enumerate(targets.tolist()):
                if other != n:
                    alone.global_mean.update(y)
            alone.learn_one(user, row, target)
            for key, new, old in (
                (("u", user), alone.u_latents[user], start.u_latents[user]),
                (("ub", user), alone.u_biases[user], start.u_biases[user]),
                (("i", row), alone.i_latents[row], start.i_latents[row]),
                (("ib", row), alone.i_biases[row], start.i_biases[row]),
            ):
                steps[key] = steps.get(key, 0.0) + (new - old)
        for (kind, key), step in steps.items():
            table = {"u": river.u_latents, "ub": river.u_biases,
                     "i": river.i_latents, "ib": river.i_biases}[kind]  # fmt: skip
            table[key] = start_value(start, kind, key) + step
        for y in targets.tolist():
            river.global_mean.update(y)
        ours.learn(user, rows, targets)
        assert ours.mean == pytest.approx(river.global_mean.get(), rel=1e-12)
        np.testing.assert_allclose(ours.user_vector(user)[:K], river.u_latents[user], rtol=1e-9)
        assert ours.user_bias(user) == pytest.approx(river.u_biases[user], rel=1e-9)
        for i in set(rows.tolist()):
            np.testing.assert_allclose(ours.items.data[i, :K], river.i_latents[i], rtol=1e-9)
            assert ours.items.data[i, K] == pytest.approx(river.i_biases[i], rel=1e-9)
    assert duplicated > 50  # batches with an item drawn twice: the case under test


def start_value(model: reco.BiasedMF, kind: str, key: object) -> np.ndarray | float:
    table = {"u": model.u_latents, "ub": model.u_biases,
             "i": model.i_latents, "ib": model.i_biases}[kind]  # fmt: skip
    value = table[key]
    return value.copy() if isinstance(value, np.ndarray) else value


def learned(users: int, seed: int = 5) -> TasteModel:
    taste = TasteModel(n_factors=K, seed=seed)
    rng = np.random.default_rng(seed)
    for n in range(3 * users):
        rows = rng.integers(0, 30, size=4)
        taste.learn(f"u{n % users}", rows, np.array([1.0, 0.0, 0.0, 0.0]))
    return taste


def same(a: TasteModel, b: TasteModel) -> None:
    assert list(a.users) == list(b.users)
    for user in a.users:
        assert a.user_vector(user).tolist() == b.user_vector(user).tolist()
        assert a.user_bias(user) == b.user_bias(user)
        assert a.scores(user, 30).tolist() == b.scores(user, 30).tolist()


def test_a_snapshot_of_the_users_as_arrays_and_floats_restores_as_rows() -> None:
    """Before rows, a user was an array (factors, 1) and a float: same model, same steps."""
    taste = learned(users=50)
    old = dict(vars(taste))
    del old["user_rows"]
    old["users"] = {user: taste.user_vector(user).copy() for user in taste.users}
    old["user_biases"] = {user: taste.user_bias(user) for user in taste.users}
    old["rng"] = copy.deepcopy(taste.rng)
    old["items"] = copy.deepcopy(taste.items)
    old["learned"] = copy.deepcopy(taste.learned)
    restored = TasteModel.__new__(TasteModel)
    restored.__setstate__(old)
    same(restored, taste)
    for model in (taste, restored):  # and they go on alike, new users included
        model.learn("u3", np.array([1, 2]), np.array([1.0, 0.0]))
        model.learn("new", np.array([4, 2]), np.array([1.0, 0.0]))
    same(restored, taste)


def test_a_snapshot_holds_the_rows_written_and_restores_them_in_their_blocks() -> None:
    taste = learned(users=UserRows.BLOCK + 10)  # two blocks
    blob = seal(taste, key=b"k", app_id="a", partition=0, created_ms=0)
    restored = unseal(blob, key=b"k", app_id="a", partition=0)[1]
    assert len(restored.user_rows.blocks) == 2
    assert len(blob) < 2 * UserRows.BLOCK * (K + 2) * 8  # the rows, not the blocks' free ends
    same(restored, taste)
    for model in (taste, restored):
        model.learn(f"u{UserRows.BLOCK + 5}", np.array([7]), np.array([1.0]))
        model.learn("another", np.array([7]), np.array([1.0]))
    same(restored, taste)


@pytest.mark.parametrize("size", [0, 1, UserRows.BLOCK - 1, UserRows.BLOCK, UserRows.BLOCK + 1])
def test_the_packed_rows_are_those_written_in_order(size: int) -> None:
    rows = UserRows(3)
    for n in range(size):
        rows[rows.add()][:] = (n, -n, 0.5)
    packed = rows.packed()
    assert packed.shape == (size, 3)
    assert packed.tolist() == [[n, -n, 0.5] for n in range(size)]
