"""The `prepare` stage: corpora -> cleaned, deduplicated, split Parquet shards + SentencePiece."""
