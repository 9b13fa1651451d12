"""Model package tools: exporting a package to other inference engines (`ct2`) and averaging
checkpoints into a new package (`averaging`)."""
