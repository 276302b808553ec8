"""Taste: biased matrix factorisation of implicit feedback, learned a few samples at a time.

:class:`TasteModel` is River's ``BiasedMF`` (global mean, user and item biases, user and
item latent vectors, squared loss, plain SGD with L2) with its item side stacked into one
numpy matrix over the partition's item index, so that learning from a choice and its
sampled negatives is one vectorised step and ranking every item is one matrix-vector
product. River's ``learn_one`` updates dictionaries one sample at a time (~18 µs per
sample here); the recommender learns five samples per choice and one per playback end.

Learning one sample is exactly River's ``learn_one`` (``tests/unit/models/test_taste.py``
checks it against ``river.reco.BiasedMF``). Learning several at once is the minibatch
form of the same step: every gradient is taken at the current parameters, and the
user's gradients are summed, as several ``learn_one`` calls would add them; so are an
item's, when it is among the rows more than once (a negative drawn twice).

An item is given random latent factors the first time it is learned; until then its
row is zero, so items nobody has chosen yet add nothing to anybody's taste score. A user
is likewise unknown (:meth:`knows` is false) until first learned: predicting never adds
a user or an item (River's ``predict_one`` would).

Examples
--------
>>> import numpy as np
>>> taste = TasteModel(n_factors=4, seed=1)
>>> for _ in range(200):
...     taste.learn("u1", np.array([0, 1]), np.array([1.0, 0.0]))
>>> scores = taste.scores("u1", 2)
>>> bool(scores[0] > scores[1]), taste.knows("u1"), taste.knows("u2")
(True, True, False)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.models.reco.items import GrowableArray
from pipeline.serde.snapshots import stored_as

__all__ = ["TasteModel", "UserRows"]


@stored_as("UserRows")
class UserRows:
    """Users' rows of doubles, in blocks of :attr:`BLOCK` that never move once made.

    A user's row is a view into its block: what is written to it stays. One user took a
    numpy array of its own (112 bytes of header for 136 of factors) and a float for its
    bias, in two dictionaries; in a partition of a million users, rows of a block take
    the bytes of their numbers and one dictionary entry.

    >>> rows = UserRows(3)
    >>> row = rows[rows.add()]; row[:] = (1.0, 2.0, 3.0)
    >>> rows[0].tolist(), len(rows)
    ([1.0, 2.0, 3.0], 1)
    """

    __slots__ = ("width", "blocks", "size")
    BLOCK = 4096

    def __init__(self, width: int) -> None:
        self.width = width
        self.blocks: list[np.ndarray] = []
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, row: int) -> np.ndarray:
        return self.blocks[row // self.BLOCK][row % self.BLOCK]

    def add(self) -> int:
        """A new row, zeros; its index."""
        row = self.size
        if row // self.BLOCK == len(self.blocks):
            self.blocks.append(np.zeros((self.BLOCK, self.width)))
        self.size += 1
        return row

    def packed(self) -> np.ndarray:
        """Every row in order, as one array (a copy of the rows written, not of the blocks).

        >>> rows = UserRows(2)
        >>> for _ in range(UserRows.BLOCK + 1):
        ...     rows[rows.add()][:] = (1.0, 2.0)
        >>> rows.packed().shape
        (4097, 2)
        """
        full, rest = divmod(self.size, self.BLOCK)
        parts = self.blocks[:full]
        if rest:
            parts = [*parts, self.blocks[full][:rest]]
        return np.concatenate(parts) if parts else np.zeros((0, self.width))

    def __getstate__(self) -> tuple[int, np.ndarray]:
        return self.width, self.packed()  # the rows, not the blocks' unused ends

    def __setstate__(self, state: tuple[int, np.ndarray]) -> None:
        self.width, packed = state
        self.blocks, self.size = [], 0
        for start in range(0, len(packed), self.BLOCK):
            part = packed[start : start + self.BLOCK]
            block = np.zeros((self.BLOCK, self.width))
            block[: len(part)] = part
            self.blocks.append(block)
        self.size = len(packed)


@stored_as("TasteModel")
class TasteModel:
    """Biased MF over item indices; a user's vector is their factors followed by a 1.

    The item matrix holds each item's factors followed by its bias, so ``items @ user``
    (:meth:`scores`) is the taste signal of every item: factors · user factors + item
    bias (the global mean and the user's bias are the same for every item and left out).

    The factors learn at 0.2 by default, not River's 0.05: a user makes a few dozen choices
    a month, and at 0.05 their factors had barely left their random start (ranked by
    taste alone, the lists of the quality-floors run hit the next item 7 % of the time,
    below trending's 17 %; 19 % at 0.2).
    """

    def __init__(
        self,
        *,
        n_factors: int = 16,
        bias_lr: float = 0.01,
        latent_lr: float = 0.2,
        l2_bias: float = 1e-3,
        l2_latent: float = 1e-3,
        sigma: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.n_factors = n_factors
        self.latent_lr = latent_lr
        self.bias_lr = bias_lr
        self.l2_latent = l2_latent
        self.l2_bias = l2_bias
        self.sigma = sigma
        self.rng = np.random.default_rng(seed)
        self.items = GrowableArray(n_factors + 1)
        self.learned = GrowableArray(dtype=np.bool_)  # whether an item has factors yet
        #: User → its row in :attr:`user_rows`: factors, then 1, then the user's bias.
        self.users: dict[str, int] = {}
        self.user_rows = UserRows(n_factors + 2)
        self.mean = 0.0
        self.samples = 0
        # per column of an item row: the learning rate of the factors then of the bias, and
        # what L2 leaves of them after a step
        self._lr = np.append(np.full(n_factors, latent_lr), bias_lr)
        self._decay = 1.0 - self._lr * np.append(np.full(n_factors, l2_latent), l2_bias)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "user_biases" in state:  # a snapshot of before 2026-12-06: an array and a float a user
            vectors: dict[str, np.ndarray] = state.pop("users")
            biases: dict[str, float] = state.pop("user_biases")
            rows = UserRows(state["n_factors"] + 2)
            users: dict[str, int] = {}
            for user_id, vector in vectors.items():
                row = rows[users.setdefault(user_id, rows.add())]
                row[:-1] = vector
                row[-1] = biases.get(user_id, 0.0)
            state["users"], state["user_rows"] = users, rows
        self.__dict__.update(state)

    def knows(self, user_id: str) -> bool:
        """Whether ``user_id`` has been learned from."""
        return user_id in self.users

    def user_vector(self, user_id: str) -> np.ndarray | None:
        """The user's factors followed by a 1 (a view: the model's own numbers), if known."""
        row = self.users.get(user_id)
        return None if row is None else self.user_rows[row][: self.n_factors + 1]

    def user_bias(self, user_id: str) -> float:
        """The user's bias (0 while unknown)."""
        row = self.users.get(user_id)
        return 0.0 if row is None else float(self.user_rows[row][self.n_factors + 1])

    def predict_one(self, user_id: str, row: int) -> float:
        """The predicted feedback of ``user_id`` for item ``row`` (adds neither to the model)."""
        user = self.user_vector(user_id)
        bias = self.user_bias(user_id)
        if user is None or row >= len(self.items.data):
            return self.mean + bias
        return self.mean + bias + float(self.items.data[row] @ user)

    def scores(
        self, user_id: str, n: int, *, rows: np.ndarray | None = None, weight: float = 1.0
    ) -> np.ndarray:
        """``weight`` × the taste signal of the first ``n`` items, or of ``rows`` among them.

        Zeros when the user is unknown (ask :meth:`knows` first to skip adding them).
        """
        user = self.user_vector(user_id)
        if user is None:
            return np.zeros(n if rows is None else len(rows))
        if rows is None:
            return self.items.view(n) @ (user * weight)
        return self.items.ensure(int(rows.max()))[rows] @ (user * weight)

    def learn(self, user_id: str, rows: np.ndarray, targets: np.ndarray) -> None:
        """One SGD step on the samples ``(user_id, rows[i]) → targets[i]`` (squared loss)."""
        row_of_user, bias = self._prepare(user_id, rows)
        user = row_of_user[: self.n_factors + 1]
        m = len(rows)
        self.samples += m
        self.mean += (float(targets.sum()) - m * self.mean) / self.samples
        items = self.items.data
        vectors = items[rows]
        gradient = vectors @ user
        gradient += (self.mean + bias) - targets
        gradient *= 2.0
        step = np.outer(gradient, user) * self._lr
        if len(set(rows.tolist())) == m:
            items[rows] = vectors * self._decay - step
        else:  # an item drawn twice takes both its steps, as two learn_one calls add them
            unique, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
            summed = np.zeros((len(unique), items.shape[1]))
            np.add.at(summed, inverse, step)
            shrink = 1.0 - counts[:, None] * (1.0 - self._decay)
            items[unique] = items[unique] * shrink - summed
        self._step_user(row_of_user, bias, gradient @ vectors, float(gradient.sum()), m)

    def learn_one(self, user_id: str, row: int, target: float) -> None:
        """:meth:`learn` of a single sample, with fewer numpy calls."""
        row_of_user, bias = self._prepare(user_id, row)
        user = row_of_user[: self.n_factors + 1]
        self.samples += 1
        self.mean += (target - self.mean) / self.samples
        vector = self.items.data[row]
        old = vector.copy()
        gradient = 2.0 * (float(vector @ user) + self.mean + bias - target)
        vector *= self._decay
        vector -= (gradient * self._lr) * user
        self._step_user(row_of_user, bias, gradient * old, gradient, 1)

    def _prepare(self, user_id: str, rows: np.ndarray | int) -> tuple[np.ndarray, float]:
        """The user's row and bias (created when new); unlearned ``rows`` given factors.

        The row is the user's factors, a 1, then the bias: its first ``n_factors + 1`` are
        the user's vector.
        """
        k = self.n_factors
        index = self.users.get(user_id)
        if index is None:
            index = self.users[user_id] = self.user_rows.add()
            row_of_user = self.user_rows[index]
            row_of_user[:k] = self.rng.normal(0.0, self.sigma, k)
            row_of_user[k] = 1.0
        else:
            row_of_user = self.user_rows[index]
        if isinstance(rows, int):
            learned = self.learned.ensure(rows)
            fresh: np.ndarray | int | None = None if learned[rows] else rows
            self.items.ensure(rows)
        else:
            last = int(rows.max())
            learned = self.learned.ensure(last)
            fresh = rows[~learned[rows]]
            self.items.ensure(last)
        if fresh is not None and np.size(fresh):
            shape = (np.size(fresh), self.n_factors)
            self.items.data[fresh, : self.n_factors] = self.rng.normal(0.0, self.sigma, shape)
            learned[fresh] = True
        return row_of_user, float(row_of_user[k + 1])

    def _step_user(
        self,
        row_of_user: np.ndarray,
        bias: float,
        loss_by_user: np.ndarray,
        loss_by_bias: float,
        m: int,
    ) -> None:
        """Step the user's factors and bias, in its row, by the summed gradients of m samples."""
        k = self.n_factors
        factors = row_of_user[:k]
        factors *= 1.0 - m * self.latent_lr * self.l2_latent
        factors -= self.latent_lr * loss_by_user[:k]
        row_of_user[k + 1] = bias - self.bias_lr * (loss_by_bias + m * self.l2_bias * bias)
