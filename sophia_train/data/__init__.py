"""Data: memory-mapped token datasets and the batch sampler (``dataset``), tokenizers (``tokenizer``),
dataset preparation (``prepare``, the ``sophia-prepare`` command) and the bundled corpus (``corpus``)."""

from sophia_train.data.dataset import (
    FULL_SCAN_TOKENS,
    META_FILE,
    SPLITS,
    BatchSampler,
    TokenDataset,
    check_fits,
    dataset_differences,
    max_token_id,
    nanogpt_meta,
    open_dataset,
    write_meta,
    write_split,
)

__all__ = ["FULL_SCAN_TOKENS", "META_FILE", "SPLITS", "BatchSampler", "TokenDataset", "check_fits", "dataset_differences",
           "max_token_id", "nanogpt_meta", "open_dataset", "write_meta", "write_split"]
