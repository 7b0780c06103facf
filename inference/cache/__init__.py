"""Computations a job may skip: the original's attention cache, the adaptive step cache
(cache-dit's DBCache), and the prompt embeddings of texts already encoded."""
