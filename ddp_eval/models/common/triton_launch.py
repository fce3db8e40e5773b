"""One lock around every launch of this package's Triton kernels.

The parity rows run in a second thread beside the batches (run/parity.py), and both threads launch the
fused vision kernels. A launch may compile a new specialisation (another divisibility of a size), and
Triton's JIT is not safe to enter from two threads at once (triton-lang/triton#5933). Held for a launch
(microseconds) it costs nothing measurable; held for a compile it makes the other thread wait for it.
"""

from __future__ import annotations

import threading

LAUNCH = threading.Lock()
