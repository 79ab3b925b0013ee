"""jaxprune: where in a vision-language model is the best place to prune visual tokens?"""

__version__ = "0.1.0"
