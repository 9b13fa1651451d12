"""s2s_core: the pure library (tokenizer, data cleaning, models, training, generation).

It reads and writes local files only and never imports ray, prefect, boto3 or fsspec,
so it can be used, tested and profiled on its own (DESIGN.md §1).
"""
