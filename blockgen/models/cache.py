"""A preallocated key/value cache: append (write), read-through without writing, and trim."""

from __future__ import annotations

import torch

from blockgen.errors import InvalidArgumentError


class KVCache:
    """Keys and values of every layer for the first `length` slots, with each slot's position and validity.

    A forward pass with `write=False` attends to cache + new keys without storing them (a diffusion step over a block
    that is not final yet); with `write=True` the new keys are appended once the pass ends.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if capacity < 1:
            raise InvalidArgumentError("capacity", capacity, "must be >= 1")
        shape = (num_layers, batch_size, num_kv_heads, capacity, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, Hkv, S, D)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.positions = torch.zeros(batch_size, capacity, dtype=torch.long, device=device)
        self.valid = torch.zeros(batch_size, capacity, dtype=torch.bool, device=device)
        self.capacity, self.length = capacity, 0
        self._padded_upto = 0  # slots before this index may hold padding; none after it

    @classmethod
    def for_model(cls, model, batch_size: int, capacity: int) -> "KVCache":
        cfg = model.config
        return cls(
            cfg.num_layers, batch_size, cfg.num_kv_heads, cfg.head_dim, capacity, dtype=model.dtype, device=model.device
        )

    @property
    def padded(self) -> bool:
        """Whether some cached slot may be padding (no query may attend to it)."""
        return self._padded_upto > 0

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def check_room(self, new: int, batch_size: int) -> None:
        if batch_size != self.batch_size:
            raise InvalidArgumentError("input_ids", f"batch of {batch_size}", f"the cache holds {self.batch_size} rows")
        if self.length + new > self.capacity:
            raise InvalidArgumentError(
                "input_ids", f"{new} new tokens", f"the cache holds {self.length} of {self.capacity} slots"
            )

    def keys_values(self, layer: int, k: torch.Tensor, v: torch.Tensor, write: bool):
        """Keys/values to attend to: the cached ones followed by k, v (B, Hkv, T, D). The new ones go into the slots
        after the cached length, read-through passes too (only `advance` makes them part of the cache), so a pass
        attends over views: no copy of the whole cache per layer and step."""
        n, t = self.length, k.shape[2]
        if n == 0 and not write:
            return k, v
        if n + t > self.capacity:  # a read-through pass longer than the room left (never in the decode loop)
            return torch.cat((self.keys[layer, :, :, :n], k), dim=2), torch.cat((self.values[layer, :, :, :n], v), 2)
        self.keys[layer, :, :, n : n + t] = k
        self.values[layer, :, :, n : n + t] = v
        return self.keys[layer, :, :, : n + t], self.values[layer, :, :, : n + t]

    def key_slots(self, positions: torch.Tensor, valid: torch.Tensor | None):
        """Positions and validity of every key a pass with these new tokens attends to."""
        n = self.length
        key_positions = torch.cat((self.positions[:, :n], positions), dim=1)
        if valid is None and self._padded_upto == 0:
            return key_positions, None
        new_valid = valid if valid is not None else torch.ones_like(positions, dtype=torch.bool)
        return key_positions, torch.cat((self.valid[:, :n], new_valid), dim=1)

    def advance(self, positions: torch.Tensor, valid: torch.Tensor | None) -> None:
        n, t = self.length, positions.shape[1]
        self.positions[:, n : n + t] = positions
        self.valid[:, n : n + t] = True if valid is None else valid
        self.length = n + t
        if valid is not None:
            self._padded_upto = self.length

    def fill_from(self, other: "KVCache") -> None:
        """Every row of this empty cache becomes the one row of `other` (rows that share a prompt: the prompt runs
        once, its keys and values are copied to each row)."""
        if self.length or other.batch_size != 1 or other.capacity > self.capacity:
            raise InvalidArgumentError("other", f"{other.batch_size} rows, {other.capacity} slots",
                                       "must be one row that fits this empty cache")
        n = other.length
        self.keys[:, :, :, :n] = other.keys[:, :, :, :n]
        self.values[:, :, :, :n] = other.values[:, :, :, :n]
        self.positions[:, :n] = other.positions[:, :n]
        self.valid[:, :n] = other.valid[:, :n]
        self.length, self._padded_upto = n, other._padded_upto

    def select_rows(self, rows: list[int]) -> None:
        """Keep only these batch rows, in this (ascending) order: finished sequences leave the batch. Compacted in
        place: rows before the first one that leaves stay where they are, the later ones move down, and the buffers
        become views of their first rows (no new allocation, no copy of the rows that stay put)."""
        if list(rows) != sorted(set(rows)) or (rows and not 0 <= rows[0] <= rows[-1] < self.batch_size):
            raise InvalidArgumentError("rows", rows, f"must be ascending row indices below {self.batch_size}")
        n = len(rows)
        first = next((j for j, row in enumerate(rows) if row != j), n)
        if first < n:
            moved = torch.tensor(rows[first:], device=self.keys.device)
            for name, axis in (("keys", 1), ("values", 1), ("positions", 0), ("valid", 0)):
                t = getattr(self, name)
                t.narrow(axis, first, n - first).copy_(t.index_select(axis, moved))
        self.keys, self.values = self.keys[:, :n], self.values[:, :n]
        self.positions, self.valid = self.positions[:n], self.valid[:n]

    def add_rows(self, other: "KVCache") -> None:
        """Append the rows of `other` (same slots filled, same capacity): sequences join the batch."""
        if other.length != self.length or other.capacity != self.capacity:
            raise InvalidArgumentError("other", f"{other.length} of {other.capacity} slots",
                                       f"must match this cache's {self.length} of {self.capacity}")
        self.keys = torch.cat((self.keys, other.keys), dim=1)
        self.values = torch.cat((self.values, other.values), dim=1)
        self.positions = torch.cat((self.positions, other.positions))
        self.valid = torch.cat((self.valid, other.valid))
        self._padded_upto = max(self._padded_upto, other._padded_upto)

    def reframe(self, left: int, capacity: int) -> None:
        """Shift every slot by `left`: a positive shift puts that many empty (invalid) slots in front, a negative one
        drops the first -left slots; the capacity becomes at least `capacity`."""
        n = self.length
        if not -n <= left:
            raise InvalidArgumentError("left", left, f"cannot drop more than the {n} cached slots")
        size = max(capacity, n + left, self.capacity)
        if left == 0 and size == self.capacity:
            return
        self.keys, self.values = (shifted(t[:, :, :, :n], 3, left, size) for t in (self.keys, self.values))
        self.positions, self.valid = (shifted(t[:, :n], 1, left, size) for t in (self.positions, self.valid))
        self.capacity, self.length = size, n + left
        self._padded_upto = self.length if left > 0 else max(0, self._padded_upto + left)

    def trim(self, length: int) -> None:
        """Forget every slot from `length` on."""
        if not 0 <= length <= self.length:
            raise InvalidArgumentError("length", length, f"must be between 0 and the cached length {self.length}")
        self.length = length
        self._padded_upto = min(self._padded_upto, length)


def shifted(t: torch.Tensor, axis: int, left: int, size: int, value=0) -> torch.Tensor:
    """`t` moved by `left` along `axis` into `size` slots: that many `value` slots in front when positive, its first
    -left slots dropped when negative; whatever does not fit at the end is cut, free slots at the end hold `value`."""
    shape = list(t.shape)
    shape[axis] = size
    out = torch.full(shape, value, dtype=t.dtype, device=t.device)
    start = max(0, left)
    source = t.narrow(axis, max(0, -left), max(0, min(t.shape[axis] + min(0, left), size - start)))
    out.narrow(axis, start, source.shape[axis]).copy_(source)
    return out

