import dagster as dg

from desi_assets.defs.preprocess.assets import preprocessed_spectra

defs = dg.Definitions(assets=[preprocessed_spectra])
