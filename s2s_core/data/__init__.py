"""Pure corpus preparation pieces: readers, cleaning, hashing/splitting and the tokenizer config."""
