"""Meta-learning steps: differentiable inner loops over parameter dictionaries and the (Reverse-)MAML
objective built on them (trd.meta.inner, trd.meta.maml)."""
