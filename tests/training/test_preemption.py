"""SIGTERM / SIGINT become a stop request only while a training run is active."""

import signal
import threading

import pytest

from wavejax import errors
from wavejax.training import preemption


def test_signals_are_recorded_and_the_handlers_put_back():
  before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
  with preemption.StopSignals() as stop:
    assert not stop.requested()
    signal.raise_signal(signal.SIGTERM)
    assert stop.requested() and stop.signal_name == "SIGTERM"
  assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before


def test_a_second_ctrl_c_interrupts_at_once():
  # Python's own Ctrl-C handler as the previous one, even where the shell that started pytest in
  # the background set SIGINT to be ignored.
  before = signal.signal(signal.SIGINT, signal.default_int_handler)
  with pytest.raises(KeyboardInterrupt):
    with preemption.StopSignals() as stop:
      signal.raise_signal(signal.SIGINT)
      assert stop.requested() and stop.signum == signal.SIGINT
      signal.raise_signal(signal.SIGINT)  # the previous handler: KeyboardInterrupt
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  signal.signal(signal.SIGINT, before)


def test_disabled_or_outside_the_main_thread_installs_nothing():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.StopSignals(enabled=False):
    assert signal.getsignal(signal.SIGTERM) is before
  seen = []

  def worker():
    with preemption.StopSignals() as stop:
      seen.append((signal.getsignal(signal.SIGTERM), stop.requested()))

  thread = threading.Thread(target=worker)
  thread.start()
  thread.join()
  assert seen == [(before, False)]


def test_preempted_exit_codes_follow_the_shell():
  assert errors.Preempted("x", signal.SIGTERM).exit_code == 143
  assert errors.Preempted("x", signal.SIGINT).exit_code == 130
  assert isinstance(errors.Preempted("x", signal.SIGTERM), errors.WavejaxError)
