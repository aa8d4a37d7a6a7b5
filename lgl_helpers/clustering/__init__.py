"""Stage II step 1: faiss k-means pseudo labels, their files, and their quality against the true speakers."""
