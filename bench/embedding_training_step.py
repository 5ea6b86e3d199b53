"""One masked-reconstruction training step of the `small` SpectrumTransformer, as trained before and now.

Before: every patch through the encoder (hidden ones key-padded) and the decoder queried at every patch. Now
(`train._hidden_terms`): only the visible patches enter the encoder and the decoder is queried at the hidden
ones, the only ones the loss counts. Batch 64, 122 patches of 64 pixels (the DESI b/r/z grid), mask ratio 0.5.

    .venv/bin/python bench/embedding_training_step.py [--threads 2]
"""

import argparse
import time

import torch

from desi_assets.science.embeddings.model import ArchConfig, SpectrumTransformer, reconstruction_loss
from desi_assets.science.embeddings.train import _hidden_terms, random_patch_mask
p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
m = SpectrumTransformer(ArchConfig())
N, T, P = 64, 122, 64
b = {"flux": torch.randn(N, T, P), "good": torch.ones(N, T, P, dtype=torch.bool), "wfeat": torch.randn(T, 32),
     "ivar": torch.ones(N, T, P), "valid": torch.ones(N, T, dtype=torch.bool)}
gen = torch.Generator().manual_seed(0)
def old():  # before: every patch through the encoder (key-padded), decoder queried at all patches
    hid = random_patch_mask(b["valid"], 0.5, gen)
    x = m.flux_in(torch.cat([b["flux"], b["good"].float()], -1)) + m.wave_in(b["wfeat"]).expand(N, -1, -1)
    h = m.enc_norm(m.encoder(x, src_key_padding_mask=hid))
    pred = m.decode(h, hid, b["wfeat"])
    reconstruction_loss(pred, b["flux"], b["ivar"], b["good"] & hid.unsqueeze(-1)).backward()
def new():
    pred, f, iv, mm = _hidden_terms(m, b, random_patch_mask(b["valid"], 0.5, gen))
    reconstruction_loss(pred, f, iv, mm).backward()
for name, fn in (("old", old), ("new", new)):
    fn(); t = time.perf_counter()
    for _ in range(10): fn()
    print(name, f"{(time.perf_counter()-t)/10*1000:.0f} ms per step (batch 64, 122 patches, {a.threads} threads)")
