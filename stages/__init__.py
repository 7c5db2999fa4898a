"""One thin script per DVC stage: parse paths, read the checked params, call pipeline/, log."""
