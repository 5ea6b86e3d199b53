"""How the embedding is read out of the encoder and probed: pooling × probe, and a patch-phase shift.

On a lakehouse where `make demo` ran, with the current embedding model, on the rows `embedding_evaluation`
scores (redshift-good GALAXY/QSO/STAR):

1. re-embeds the spectra with each pooling of the *same* encoder states ('mean': mean of the valid tokens;
   'mean_std': mean and standard deviation) and cross-validates each under two linear probes (unweighted,
   C = 1; class-balanced, C = 0.1), with `evaluate.cross_validate`, the function the asset calls;
2. shifts every arm's patch grid by half a patch (`tokenize_desi(shift=P/2)`) and reports how far the vector
   moves (in units of its nearest other spectrum's distance, standardised) and how often the probe's class
   survives, on one held-out fold.

    .venv/bin/python bench/embedding_readouts.py --lakehouse lakehouse [--folds 5] [--max-rows 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lakehouse", default="lakehouse")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--max-rows", type=int, default=0, help="evaluate at most this many rows (0: all)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes for the fold fits")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    from scipy.spatial.distance import cdist

    from desi_assets.science.embeddings import evaluate as ev
    from desi_assets.science.embeddings.tokens import tokenize_desi
    from desi_assets.science.embeddings.train import embed_arms, embed_tokens
    from desi_assets.storage import vectors as vs
    from desi_assets.storage.lakehouse import LakehouseResource

    lh = LakehouseResource(root=a.lakehouse)
    uri, name, _ = vs.current_table(lh)
    data = vs.evaluation_inputs(lh, uri, name, a.max_rows, a.seed)
    model, version = vs.load_current_model(lh)
    cat, arms = vs.read_native_spectra(lh, None, data.ids)
    order = cat.join(data.ids.with_row_index("i"), on=["coadd_key", "targetid"], how="left")["i"].to_numpy()
    print(f"model {version} ({model.cfg.pooling} shipped), {len(data.z)} rows, {a.folds}-fold CV")

    vecs = {}
    for pooling in ("mean", "mean_std"):
        m = dataclasses.replace(model.cfg, pooling=pooling)
        model.cfg = m
        t0 = time.perf_counter()
        v, _, refused = embed_arms(model, arms)
        x = np.zeros((len(data.z), m.embedding_dim), np.float64)
        x[order] = v
        vecs[pooling] = x
        print(f"  embedded with pooling {pooling!r} in {time.perf_counter() - t0:.1f} s ({int((refused != 0).sum())} refused)")
    probes = {"unweighted, C 1": ev.ProbeSettings(cs=(1.0,), balanced=False),
              "balanced, C 0.1": ev.ProbeSettings(cs=(0.1,), balanced=True)}
    print("\n| read-out | probe | balanced acc. | recall GALAXY / QSO / STAR | 10-NN purity all / QSO |")
    print("|---|---|---|---|---|")
    for pooling, x in vecs.items():
        pur = ev.neighbour_purity(x, data.spectype, data.z)
        for label, probe in probes.items():
            s = ev.summarise(ev.cross_validate(x, data.spectype, data.z, a.folds, a.seed, probe=probe, jobs=a.jobs),
                             data.spectype, data.z, data.snr)
            rec = " / ".join(f"{s[f'probe_recall_{c}']['mean']:.3f}" for c in ("GALAXY", "QSO", "STAR"))
            print(f"| {pooling} | {label} | {s['probe_balanced_accuracy']['mean']:.3f} ± "
                  f"{s['probe_balanced_accuracy']['std']:.3f} | {rec} | {pur['purity']:.3f} / {pur['purity_QSO']:.3f} |",
                  flush=True)

    model.cfg = dataclasses.replace(model.cfg, pooling="mean_std")
    shipped = vecs["mean_std"]
    test = ev.kfold_indices(len(data.z), a.folds, a.seed)[0]
    train = np.setdiff1d(np.arange(len(data.z)), test)
    half = model.cfg.patch // 2
    pick = np.flatnonzero(np.isin(order, test))
    sub = {arm: tuple(arr[pick] for arr in v) for arm, v in arms.items()}
    tok = tokenize_desi(sub, model.cfg.patch, half)
    shifted, _ = embed_tokens(model, tok)
    rows = order[pick]
    ok = tok.ok
    mu, sd = shipped[train].mean(0), shipped[train].std(0) + 1e-8
    xs, qs = (shipped - mu) / sd, (shifted[ok] - mu) / sd
    own = xs[rows[ok]]
    moved = np.linalg.norm(qs - own, axis=1)
    d_own = cdist(own, xs)
    d_own[np.arange(len(own)), rows[ok]] = np.inf
    nearest_other = d_own.min(1)
    rank = (cdist(qs, xs) < moved[:, None]).sum(1) + 1  # vectors nearer the shifted query than its own native one
    clf = ev.linear_probe(xs[train], data.spectype[train], ev.ProbeSettings())
    same = np.mean(clf.predict(qs) == clf.predict(own))
    print(f"\npatch grid shifted by {half} px (half a patch), {int(ok.sum())} held-out spectra of fold 1:")
    print(f"  vector moves {np.median(moved / nearest_other):.2f}x its nearest other spectrum's distance (median)")
    print(f"  probe class unchanged for {same:.1%}; the native vector ranks median {int(np.median(rank))} "
          f"of {len(xs)} for the shifted query")


if __name__ == "__main__":
    main()
