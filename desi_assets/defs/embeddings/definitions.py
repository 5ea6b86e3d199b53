import dagster as dg

from desi_assets.defs.embeddings.assets import embedding_evaluation, embedding_index, embedding_model, spectral_embeddings
from desi_assets.defs.partitions import coadds_partitions

embedding_model_job = dg.define_asset_job(
    "embedding_model_job", selection=dg.AssetSelection.assets(embedding_model),
    description="Train the SpectrumTransformer on the class-balanced training set.")
spectral_embeddings_job = dg.define_asset_job(
    "spectral_embeddings_job", selection=dg.AssetSelection.assets(spectral_embeddings),
    partitions_def=coadds_partitions, description="Embed coadd partitions into the model version's LanceDB table.")
embedding_evaluation_job = dg.define_asset_job(
    "embedding_evaluation_job", selection=dg.AssetSelection.assets(embedding_index, embedding_evaluation),
    description="Choose/build the vector index and evaluate the frozen vectors against baselines.")

defs = dg.Definitions(
    assets=[embedding_model, spectral_embeddings, embedding_index, embedding_evaluation],
    jobs=[embedding_model_job, spectral_embeddings_job, embedding_evaluation_job],
)
