"""faiss k-means pseudo labels, their quality measures, and notebook 02's inspection."""
