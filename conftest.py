"""Repository-wide pytest settings.

One intra-op thread per test process: with pytest-xdist's two workers on two cores this is
the fastest setting (measured: 45 ms vs 514 ms for one forward+backward under load), and it
makes float reductions run in one order, so seeded results are identical everywhere.
Notebook kernels (nbval) set the same in their first code cell.
"""

import torch

torch.set_num_threads(1)
