"""Getting batches to the devices ahead of the step that uses them."""

from __future__ import annotations

import collections
import time

# Batches loaded and sent to the devices ahead of the step that uses them (double buffering).
PREFETCH_BATCHES = 2


def prefetch(iterator, size: int = PREFETCH_BATCHES):
  """Yields `iterator`'s items while keeping `size` of them already produced: the host gathers and
  transfers batch k + size while the (asynchronously dispatched) step k runs."""
  queue = collections.deque()
  for item in iterator:
    queue.append(item)
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


class Timed:
  """Wraps an iterator and adds up the seconds spent waiting for its items (`.seconds`)."""

  def __init__(self, iterator):
    self.iterator, self.seconds = iter(iterator), 0.0

  def __iter__(self):
    return self

  def __next__(self):
    began = time.perf_counter()
    try:
      return next(self.iterator)
    finally:
      self.seconds += time.perf_counter() - began
