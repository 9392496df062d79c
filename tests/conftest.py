"""Session-wide test settings: two CPU threads, as CI and the fixtures were produced with."""

import torch

torch.set_num_threads(2)
